//! Issue 16, part 1: the Temporal connection is configured as every Temporal tool configures it
//! (`TEMPORAL_*`, TOML profiles). A TLS-terminating proxy with certificates made here stands in
//! for a Temporal cluster or Temporal Cloud in front of the dev server.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::common::{Options, TestApp};
use autopost_app::config::TemporalSettings;
use chrono::Utc;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, as PEM files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    server: (rcgen::Certificate, KeyPair),
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "temporal.test".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["autopost-worker".to_owned()]).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "autopost");
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
        Pki { dir, ca, server: (server, server_key) }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Terminates TLS (client certificates required, signed by `pki`'s CA) and passes the bytes on
/// to the dev server. Returns its address.
async fn tls_proxy(pki: &Pki, upstream: String) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    let (cert, key) = &pki.server;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    // gRPC is HTTP/2: the client offers it by ALPN and refuses a server that does not agree.
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    address
}

fn upstream() -> String {
    std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".into())
}

/// `app`'s settings, pointed at `proxy` with `pki`'s CA and client certificate.
fn through_proxy(app: &TestApp, proxy: &str, pki: &Pki) -> TemporalSettings {
    TemporalSettings {
        temporal_address: Some(proxy.to_owned()),
        temporal_tls_client_cert_path: Some(pki.path("client.pem")),
        temporal_tls_client_key_path: Some(pki.path("client.key")),
        temporal_tls_server_ca_cert_path: Some(pki.path("ca.pem")),
        ..app.config.temporal.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_a_worker_reach_temporal_through_mutual_tls_and_a_wrong_ca_fails_at_start() {
    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    let pki = Pki::new("right");
    let proxy = tls_proxy(&pki, upstream()).await;
    let tls = through_proxy(&app, &proxy, &pki);

    // A second API process's view: its Temporal client goes through TLS and starts a job.
    let api_config = {
        let mut config = app.config.clone();
        config.temporal = tls.clone();
        config.api_config()
    };
    let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_api = format!("http://{}", api_listener.local_addr().unwrap());
    let db = app.db.clone();
    tokio::spawn(async move {
        autopost_app::run_api_with(&api_config, db, api_listener, metrics_listener, std::future::pending()).await.expect("API over TLS")
    });
    // The worker too: the only one, so the job below publishes through the proxy or not at all.
    app.config.temporal = tls;
    app.start_worker();

    let account = app.link_account("instagram", "token-tls").await;
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let job = app.schedule_via(&tls_api, &account, Utc::now() + chrono::Duration::seconds(2), "over TLS", media).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);

    // A CA that did not sign the proxy's certificate: refused at start, and said so.
    let wrong = Pki::new("wrong");
    let settings = TemporalSettings { temporal_tls_server_ca_cert_path: Some(wrong.path("ca.pem")), ..app.config.temporal.clone() };
    let error = format!("{:#}", autopost_app::connect_temporal(&settings).await.expect_err("an unknown CA"));
    assert!(error.contains(&proxy) && error.contains("TLS checked against the configured server CA"), "{error}");
    assert!(error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"), "the cause is named: {error}");
    // Without a client certificate the proxy does not let us in.
    let settings =
        TemporalSettings { temporal_tls_client_cert_path: None, temporal_tls_client_key_path: None, ..app.config.temporal.clone() };
    assert!(autopost_app::connect_temporal(&settings).await.is_err(), "mutual TLS is required");
    app.kill_worker().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_file_written_by_temporal_config_set_is_honoured_and_the_variables_override_it() {
    let pki = Pki::new("profile");
    let proxy = tls_proxy(&pki, upstream()).await;
    let file = pki.path("temporal.toml");
    // Written by the Temporal CLI itself, as an operator would.
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("temporal-dev/.bin/bin/temporal");
    assert!(cli.exists(), "the Temporal CLI (temporal-dev installs it) is at {}", cli.display());
    let properties = [
        ("address", proxy.clone()),
        ("namespace", "default".to_owned()),
        ("tls.client_cert_path", pki.path("client.pem").display().to_string()),
        ("tls.client_key_path", pki.path("client.key").display().to_string()),
        ("tls.server_ca_cert_path", pki.path("ca.pem").display().to_string()),
    ];
    for (property, value) in properties {
        let status = std::process::Command::new(&cli)
            .args(["config", "set", "--profile", "staging", "--prop", property, "--value", &value])
            .env("TEMPORAL_CONFIG_FILE", &file)
            .status()
            .unwrap();
        assert!(status.success(), "temporal config set --prop {property}");
    }
    let settings = TemporalSettings {
        temporal_address: None,
        temporal_namespace: None,
        temporal_api_key: None,
        temporal_tls: None,
        temporal_tls_client_cert_path: None,
        temporal_tls_client_key_path: None,
        temporal_tls_server_ca_cert_path: None,
        temporal_tls_server_name: None,
        temporal_profile: Some("staging".into()),
        temporal_config_file: Some(file.clone()),
        task_queue: "unused".into(),
    };
    let client = autopost_app::connect_temporal(&settings).await.expect("the staging profile connects through TLS");
    drop(client);
    // A setting overrides the profile: here, the plain dev server instead of the proxy.
    let plain = TemporalSettings { temporal_address: Some(upstream()), temporal_tls: Some("false".into()), ..settings.clone() };
    autopost_app::connect_temporal(&plain).await.expect("TEMPORAL_ADDRESS and TEMPORAL_TLS override the profile");
    let missing = TemporalSettings { temporal_profile: Some("production".into()), ..settings };
    let error = format!("{:#}", autopost_app::connect_temporal(&missing).await.expect_err("no such profile"));
    assert!(error.contains("production"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_is_sent_as_the_authorization_header_and_never_shown() {
    // A bare HTTP/2 server in place of Temporal: it records the first request's headers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let _ = seen_tx.send(request.headers().clone());
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "16")
                        .header("grpc-message", "unauthenticated")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(response, true);
                }
            });
        }
    });
    let key = "tk-test-0123456789abcdef";
    let settings = TemporalSettings {
        temporal_address: Some(address),
        temporal_namespace: Some("default".into()),
        temporal_api_key: Some(SecretString::from(key)),
        // Plain HTTP/2, so that this server can read the headers.
        temporal_tls: Some("false".into()),
        temporal_tls_client_cert_path: None,
        temporal_tls_client_key_path: None,
        temporal_tls_server_ca_cert_path: None,
        temporal_tls_server_name: None,
        temporal_profile: None,
        temporal_config_file: Some("/dev/null".into()),
        task_queue: "unused".into(),
    };
    let error = autopost_app::connect_temporal(&settings).await.map(|_| ()).err().map(|e| format!("{e:#}")).unwrap_or_default();
    let headers = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv()).await.expect("a request reached the server").unwrap();
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some(format!("Bearer {key}").as_str()));
    assert!(!error.contains(key), "the key is not in the error: {error}");
    assert!(!format!("{settings:?}").contains(key), "nor in the settings' debug output");
    assert_eq!(settings.temporal_api_key.as_ref().unwrap().expose_secret(), key);
}
