//! A minimal HTTP/1.1 "hello" server: keep-alive, pipelining-safe, one goroutine per
//! connection.
//!
//! ```text
//! cargo run --release --example http [listen-address]     # default 127.0.0.1:8080
//! wrk -t1 -c64 -d5s --latency http://127.0.0.1:8080/
//! ```
//! Requests are split at their `\r\n\r\n` header terminator (a `Content-Length` body is
//! skipped), every complete request in a read gets its response, and the responses of one
//! read go out in one write, so pipelined requests are answered in order. `Connection: close`
//! (or HTTP/1.0 without keep-alive) ends the connection after its response.

use gort::net::{TcpListener, TcpStream};
use std::io::{Read, Write};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n";

/// Requests whose headers exceed this are refused (the connection is closed).
const MAX_HEADER: usize = 64 * 1024;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    gort::run(move || {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("http: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "http: listening on http://{}/",
            listener.local_addr().unwrap()
        );
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    gort::go(move || serve(conn));
                }
                Err(e) => {
                    eprintln!("http: accept: {e}");
                    gort::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    });
}

/// What one parsed request asks of the connection.
struct Request {
    /// Bytes of the request (headers and body).
    len: usize,
    close: bool,
}

/// Parse the first request in `buf`, if it is complete.
fn parse(buf: &[u8]) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..end];
    let mut body = 0usize;
    let mut close = false;
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with(b"HTTP/1.0\r");
    let mut keep_alive = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(value).ok()?.parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value.eq_ignore_ascii_case(b"close");
            keep_alive |= value.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    let len = end.checked_add(body)?;
    if buf.len() < len {
        return None;
    }
    Some(Request {
        len,
        close: close || (http10 && !keep_alive),
    })
}

fn serve(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    let mut out = Vec::with_capacity(RESPONSE.len() * 16);
    loop {
        if have == buf.len() {
            if buf.len() >= MAX_HEADER {
                return;
            }
            buf.resize(buf.len() * 2, 0);
        }
        match conn.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        let mut done = 0;
        let mut close = false;
        while let Some(req) = parse(&buf[done..have]) {
            out.extend_from_slice(RESPONSE);
            done += req.len;
            if req.close {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        buf.copy_within(done..have, 0);
        have -= done;
    }
}
