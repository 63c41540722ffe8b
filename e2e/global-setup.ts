// Starts the suite's own autopost processes, and a small control server through which a test
// restarts the API (the reconnect scenario). The returned function is the teardown.
import { createServer } from 'node:http';
import { Stack } from './stack';

export default async function globalSetup(): Promise<() => Promise<void>> {
  const stack = await Stack.start();
  const control = createServer(async (request, response) => {
    try {
      if (request.method === 'POST' && request.url === '/api/stop') await stack.stopApi();
      else if (request.method === 'POST' && request.url === '/api/start') await stack.startApi();
      else {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200).end('ok');
    } catch (error) {
      response.writeHead(500).end(String(error));
    }
  });
  await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
  const address = control.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  // Inherited by the test workers.
  process.env.E2E_API = stack.api;
  process.env.E2E_SANDBOX = stack.sandbox;
  process.env.E2E_CONTROL = `http://127.0.0.1:${port}`;
  process.env.E2E_STACK_ENV = JSON.stringify(stack.env);
  return async () => {
    control.close();
    await stack.stopAll();
  };
}
