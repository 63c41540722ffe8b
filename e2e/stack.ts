// The autopost processes the suite runs against: a sandbox, a worker and an API of its own (own
// database, task queue and ports), on the Temporal and PostgreSQL that temporal-dev/test provides.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');

export function autopostBinary(): string {
  if (process.env.AUTOPOST_BIN) return process.env.AUTOPOST_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
  return path.join(target, 'debug', 'autopost');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function until(what: string, check: () => Promise<boolean>, seconds = 60): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export class Stack {
  readonly env: Record<string, string>;
  readonly api: string;
  readonly sandbox: string;
  readonly logs: string;
  private processes = new Map<string, ChildProcess>();
  private adminUrl: string;
  private database: string;

  private constructor(env: Record<string, string>, api: string, sandbox: string, logs: string, adminUrl: string, database: string) {
    this.env = env;
    this.api = api;
    this.sandbox = sandbox;
    this.logs = logs;
    this.adminUrl = adminUrl;
    this.database = database;
  }

  static async start(): Promise<Stack> {
    const suffix = randomBytes(6).toString('hex');
    const database = `autopost_e2e_${suffix}`;
    const server = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
    const databaseUrl = new URL(server);
    databaseUrl.pathname = `/${database}`;
    const adminUrl = new URL(server);
    adminUrl.pathname = '/postgres';
    const [apiPort, sandboxPort] = [await freePort(), await freePort()];
    const sandbox = `http://127.0.0.1:${sandboxPort}`;
    const api = `http://127.0.0.1:${apiPort}`;
    const env: Record<string, string> = {
      PATH: process.env.PATH || '/usr/bin:/bin',
      RUST_LOG: 'info,temporalio_sdk_core=warn',
      AUTOPOST_LOG_FORMAT: 'json',
      DATABASE_URL: databaseUrl.toString(),
      TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS || '127.0.0.1:7233',
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_CONFIG_FILE: '/dev/null',
      AUTOPOST_TASK_QUEUE: `autopost-e2e-${suffix}`,
      AUTOPOST_SANDBOX_LISTEN: `127.0.0.1:${sandboxPort}`,
      INSTAGRAM_API_BASE: `${sandbox}/instagram/v25.0`,
      TIKTOK_API_BASE: `${sandbox}/tiktok`,
      TIKTOK_CLIENT_KEY: 'e2e-client-key',
      TIKTOK_CLIENT_SECRET: 'e2e-client-secret',
      AUTOPOST_LISTEN: `127.0.0.1:${apiPort}`,
      AUTOPOST_METRICS_LISTEN: '127.0.0.1:0',
      AUTOPOST_WORKER_METRICS_LISTEN: '127.0.0.1:0',
      AUTOPOST_DEV_SANDBOX_URL: sandbox,
      // Short, so that a platform failing every attempt reaches needs_attention in seconds.
      AUTOPOST_RETRY_BACKOFF: '1s,2s,3s',
      AUTOPOST_PUBLISH_NOW: 'true',
      AUTOPOST_RECONCILE_INTERVAL: '2s',
      AUTOPOST_SHUTDOWN_GRACE: '2s',
      AUTOPOST_CREATOR_WRITES_PER_MINUTE: '0',
      AUTOPOST_JWT_SECRET: `e2e-secret-${randomBytes(24).toString('hex')}`,
      AUTOPOST_TOKEN_KEYS: `e2e:${randomBytes(32).toString('base64')}`,
    };
    const logs = path.join(__dirname, 'test-results', 'processes');
    mkdirSync(logs, { recursive: true });
    const stack = new Stack(env, api, sandbox, logs, adminUrl.toString(), database);
    execFileSync(autopostBinary(), ['migrate'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    stack.spawn('sandbox');
    await until('the sandbox answering', async () => (await fetch(`${sandbox}/_sandbox/posts`)).ok);
    stack.spawn('worker');
    await stack.startApi();
    await until('a worker polling the task queue', async () => {
      const ready = await (await fetch(`${api}/readyz`)).json();
      return ready.worker && ready.worker.polling === true;
    });
    return stack;
  }

  private spawn(name: string): void {
    const log = createWriteStream(path.join(this.logs, `${name}.log`), { flags: 'a' });
    const child = spawn(autopostBinary(), [name], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.processes.set(name, child);
  }

  async startApi(): Promise<void> {
    this.spawn('api');
    await until('the API answering', async () => (await fetch(`${this.api}/healthz`)).ok);
  }

  // SIGTERM, as an orchestrator stops it; resolves once the process is gone.
  async stopApi(): Promise<void> {
    await this.stop('api');
  }

  private async stop(name: string): Promise<void> {
    const child = this.processes.get(name);
    this.processes.delete(name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  }

  // A bearer token for `creator`, made by `autopost token` with the stack's secret.
  token(creator: string): string {
    return execFileSync(autopostBinary(), ['token', '--creator', creator, '--ttl', '2h'], { env: this.env }).toString().trim();
  }

  async stopAll(): Promise<void> {
    for (const name of ['api', 'worker', 'sandbox']) await this.stop(name);
    try {
      execFileSync('psql', ['-d', this.adminUrl, '-qc', `DROP DATABASE IF EXISTS "${this.database}" WITH (FORCE)`], { stdio: 'ignore' });
    } catch {
      // temporal-dev/test drops leftovers before each run
    }
  }
}
