//! Whole requests: arbitrary bytes sent on a TCP connection to an
//! in-process gateway in front of a stub upstream. The gateway must answer
//! or close within the time limit, never panic, and keep serving: after
//! each input a well-formed request must still succeed.
//! `cargo +nightly fuzz run request`.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Rig {
    rt: tokio::runtime::Runtime,
    gateway: SocketAddr,
}

/// A stub upstream: reads a request head and answers 200 with a short body.
async fn stub(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut seen = Vec::new();
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
            }
        });
    }
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let gateway = rt.block_on(async {
            let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
            let up_addr = up.local_addr().expect("stub address");
            tokio::spawn(stub(up));
            let toml = format!(
                "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nclient_header_timeout = \"200ms\"\nkeepalive_timeout = \"100ms\"\nmax_request_body_size = 4096\n\n\
                 [access_log]\ntarget = \"off\"\n\n[upstream.app]\nservers = [\"{up_addr}\"]\nresponse_timeout = \"1s\"\nbody_idle_timeout = \"200ms\"\n\n\
                 [[route]]\nupstream = \"app\"\n"
            );
            let loaded = waygate_config::parse(&toml, "fuzz.toml", std::path::Path::new("."))
                .expect("valid rig config");
            let gw = waygate_proxy::Gateway::build(&loaded.config, waygate_telemetry::AccessLog::off())
                .expect("build");
            let bound = gw.bind().await.expect("bind");
            let addr = bound.local_addrs()[0];
            tokio::spawn(gw.serve(bound, std::future::pending()));
            addr
        });
        Rig { rt, gateway }
    })
}

/// Sends `bytes` and reads until the gateway closes (it does within
/// the rig's 200 ms header and 100 ms keep-alive timeouts); the client
/// does not half-close, as browsers do not.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the gateway accepts");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        done.is_ok(),
        "the gateway neither answered nor closed within 5 s"
    );
    out
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    rig.rt.block_on(async {
        let _ = exchange(rig.gateway, data).await;
        // Still serving.
        let ok = exchange(
            rig.gateway,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            ok.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&ok)
        );
    });
});
