//! An MQTT-over-WebSocket client over real mTLS for tests: raw MQTT bytes
//! (built with [`crate::raw`]) in binary WebSocket messages, frames read
//! back as the broker sent them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::mqtt::{Credentials, client_tls};
use crate::pki::{Client, Pki};
use crate::raw::{Frame, take_frame};

/// A WebSocket connection to the broker's `[listeners] websocket`.
#[derive(Debug)]
pub struct WsClient {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl WsClient {
    /// mTLS with `client`'s certificate, then the upgrade offering
    /// `subprotocol` (`None`: no Sec-WebSocket-Protocol header). The TLS
    /// part must succeed; the upgrade's result is returned.
    pub async fn connect(
        addr: SocketAddr,
        pki: &Pki,
        client: &Client,
        subprotocol: Option<&str>,
    ) -> Result<WsClient, Error> {
        let config = client_tls(&pki.ca_path, Some(Credentials::from(client)));
        let tcp = TcpStream::connect(addr).await.expect("TCP connection");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS connection");
        let mut request = format!("wss://localhost:{}/mqtt", addr.port())
            .into_client_request()
            .expect("request");
        if let Some(p) = subprotocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("header"),
            );
        }
        let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
        Ok(WsClient {
            ws,
            buf: Vec::new(),
        })
    }

    /// Sends `bytes` as one binary message.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send to the broker");
    }

    /// Sends a text message (which MQTT over WebSocket does not allow).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// The next MQTT frame within `within`; `None` on close or time-out.
    /// Frames may span messages, and one message may hold several.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = take_frame(&mut self.buf) {
                return Some(f);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                _ => return None,
            }
        }
    }

    /// Whether the broker closes the connection within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}
