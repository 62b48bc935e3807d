//! The network baseline: a raw loopback TCP stream between two pinned
//! threads, measured in the same run as a broker benchmark, so that broker
//! figures are reported as a fraction of what the sockets themselves carry.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Pins the calling thread to one CPU.
pub fn pin_to_core(core: usize) -> std::io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `total_bytes` over one loopback TCP connection in `chunk_bytes`
/// writes, sender pinned to `send_core` and receiver to `recv_core`; returns
/// MiB/s as seen by the receiver.
pub fn loopback_tcp_mib_per_s(
    total_bytes: u64,
    chunk_bytes: usize,
    send_core: usize,
    recv_core: usize,
) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let receiver = std::thread::spawn(move || {
        let _ = pin_to_core(recv_core);
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        let start = Instant::now();
        while got < total_bytes {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        got as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
    });
    let _ = pin_to_core(send_core);
    let mut s = TcpStream::connect(addr).expect("connect loopback");
    let _ = s.set_nodelay(true);
    let chunk = vec![0x5au8; chunk_bytes];
    let mut sent = 0u64;
    while sent < total_bytes {
        let n = chunk_bytes.min((total_bytes - sent) as usize);
        s.write_all(&chunk[..n]).expect("write");
        sent += n as u64;
    }
    drop(s);
    receiver.join().expect("receiver thread")
}
