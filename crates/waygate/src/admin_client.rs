//! A client of the admin listener, for `waygate why` and `waygate reload`.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Where to ask, from the flags or the config's `[admin]` table.
pub(crate) struct Target {
    pub(crate) admin: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) config: std::path::PathBuf,
}

pub(crate) fn admin_target(t: Target) -> anyhow::Result<(String, Option<String>)> {
    let (addr, token) = match t.admin {
        Some(a) => (a, t.token),
        None => {
            let admin = waygate_config::load_admin(Path::new(&t.config)).map_err(|d| {
                anyhow::anyhow!(
                    "no --admin given and the [admin] table of {} is not usable: {}",
                    t.config.display(),
                    d.first().map(ToString::to_string).unwrap_or_default()
                )
            })?;
            let admin = admin.with_context(|| {
                format!(
                    "{} has no [admin] table; pass --admin ADDR",
                    t.config.display()
                )
            })?;
            (admin.listen.to_string(), t.token.or(admin.token))
        }
    };
    Ok((addr, token))
}

/// GETs `path` from the admin listener; the status and the JSON body.
pub(crate) async fn get(
    addr: &str,
    token: Option<&str>,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    request(http::Method::GET, addr, token, path).await
}

/// Sends `method path` to the admin listener; the status and the JSON body.
pub(crate) async fn request(
    method: http::Method,
    addr: &str,
    token: Option<&str>,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the admin listener at {addr}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr);
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = tx.send_request(req.body(Empty::<Bytes>::new())?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}
