//! A TCP echo server: one goroutine per connection, each echoing what it reads.
//!
//! ```text
//! cargo run --release --example echo [listen-address]     # default 127.0.0.1:7000
//! ```
//! It prints the address it listens on, then serves until killed. Load it with any echo
//! client (the README's figures use `echoclient` from the shared rust-peers bench).

use gort::net::TcpListener;
use std::io::{Read, Write};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    gort::run(move || {
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        println!("echo: listening on {}", listener.local_addr().unwrap());
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    gort::go(move || serve(conn));
                }
                Err(e) => {
                    // Out of fds, say: the listener keeps working once some are freed.
                    eprintln!("echo: accept: {e}");
                    gort::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    });
}

fn serve(mut conn: gort::net::TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
