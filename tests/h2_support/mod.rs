//! A few lines of raw HTTP/2 over a real loopback socket, for peers that
//! must do what hyper's server never does (a GOAWAY naming no stream, a
//! silent stream whose PINGs are counted).

#![allow(dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// `:status 200` from HPACK's static table.
pub const STATUS_200: u8 = 0x88;

/// One frame: a 9-byte head and its payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame as read: kind, flags, stream and payload.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads the client's preface and answers with empty SETTINGS.
pub async fn accept_preface(sock: &mut TcpStream) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    sock.read_exact(&mut preface).await?;
    assert_eq!(preface, PREFACE, "an HTTP/2 client with prior knowledge");
    sock.write_all(&frame(SETTINGS, 0, 0, &[])).await
}

/// Reads the next frame, acknowledging the client's SETTINGS on the way.
pub async fn read_frame(sock: &mut TcpStream) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    sock.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let (kind, flags) = (head[3], head[4]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload).await?;
    if kind == SETTINGS && flags & ACK == 0 {
        sock.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
    }
    Ok(Frame {
        kind,
        flags,
        stream,
        payload,
    })
}
