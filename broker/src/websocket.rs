//! MQTT over WebSocket (`[listeners] websocket`, off by default): the same
//! TLS and client certificate as the MQTT listener, then an HTTP upgrade
//! that must offer the `mqtt` subprotocol [MQTT-6.0.0-3/4]; after it the
//! binary messages are one byte stream, cut anywhere (a message may hold
//! part of a packet or several [MQTT-6.0.0-2]), and everything past the
//! upgrade is the same session code as for raw MQTT. A text message closes
//! the connection [MQTT-6.0.0-1].
//!
//! tungstenite parses the upgrade request and the WebSocket framing from the
//! peer's bytes — only after the client certificate was accepted, within
//! `tls.handshake_timeout`, with the request bounded by tungstenite (64 KiB)
//! and every message and frame by `mqtt.max_packet_size` (+16). The MQTT
//! bytes inside then go through the same validator as on the MQTT listener.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The subprotocol MQTT over WebSocket uses.
const SUBPROTOCOL: &str = "mqtt";

/// Upgrades an mTLS connection to a WebSocket carrying MQTT; messages are
/// bounded by the largest packet accepted (plus framing slack).
pub(crate) async fn accept(
    tls: TlsStream<TcpStream>,
    max_packet_size: usize,
) -> Result<WsIo, WsError> {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(max_packet_size + 16);
    config.max_frame_size = Some(max_packet_size + 16);
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(tls, choose_mqtt, Some(config)).await?;
    Ok(WsIo {
        ws,
        rest: Bytes::new(),
    })
}

/// The upgrade must offer `mqtt`; the answer names it.
#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn choose_mqtt(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offered {
        let mut refusal = ErrorResponse::new(Some(
            "MQTT over WebSocket needs the subprotocol \"mqtt\" (Sec-WebSocket-Protocol: mqtt)"
                .to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// A WebSocket as the byte stream the session reads and writes.
pub(crate) struct WsIo {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    /// What is left of the last binary message.
    rest: Bytes,
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.rest.is_empty() {
                let n = self.rest.len().min(buf.remaining());
                buf.put_slice(&self.rest[..n]);
                self.rest.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.rest = data,
                // Answered by tungstenite itself on the next write or flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on MQTT over WebSocket (only binary messages carry MQTT)",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        ready!(ws.poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

/// The connection under a session: raw MQTT over TLS, or over a WebSocket.
// The raw TLS stream is the common case and stays inline (no allocation);
// the rarer WebSocket is boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Io {
    Tls(TlsStream<TcpStream>),
    Ws(Box<WsIo>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Io::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Io::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
            Io::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Io::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
