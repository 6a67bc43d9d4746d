//! `herald-loadgen floor`: what the machine allows. The CPU cost of
//! writing one small frame per `write` call to many loopback sockets, and
//! of several frames per call, measured on the writing thread (on loopback
//! the kernel does the receiving side inline in the writer's system call,
//! so this is the cost a server pays per push). Every benchmark states its
//! ratio to this floor measured the same day.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One result row.
pub struct Row {
    pub frames_per_write: usize,
    pub frames: u64,
    pub cpu_us_per_frame: f64,
    pub frames_per_s: f64,
}

/// Opens `connections` loopback socket pairs, drains the readers on the
/// runtime, and writes `frames` frames of `frame_bytes` round-robin for
/// each batch size, from one thread.
pub async fn run(
    connections: usize,
    frames: u64,
    frame_bytes: usize,
    batches: &[usize],
) -> anyhow::Result<Vec<Row>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = tokio::net::TcpStream::connect(addr).await?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        writers.push(server);
        // The reading side: drain and discard, as a client would.
        tokio::spawn(async move {
            let mut c = client;
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
    let batches = batches.to_vec();
    let rows = tokio::task::spawn_blocking(move || measure(writers, frames, frame_bytes, &batches))
        .await??;
    Ok(rows)
}

fn measure(
    mut writers: Vec<TcpStream>,
    frames: u64,
    frame_bytes: usize,
    batches: &[usize],
) -> anyhow::Result<Vec<Row>> {
    // A WebSocket text frame: header (2 bytes, or 4 with a 16-bit length)
    // and payload.
    let payload = frame_bytes.clamp(3, 65_535);
    let mut frame = if payload < 126 {
        vec![0x81u8, payload as u8]
    } else {
        vec![0x81u8, 126, (payload >> 8) as u8, payload as u8]
    };
    frame.extend(std::iter::repeat_n(b'x', payload));
    let mut rows = Vec::new();
    for &b in batches {
        let b = b.max(1);
        let buf: Vec<u8> = frame.repeat(b);
        let writes = (frames / b as u64).max(1);
        let n = writers.len();
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        for i in 0..writes {
            writers[(i as usize) % n].write_all(&buf)?;
        }
        let cpu = thread_cpu() - cpu0;
        let wall = t0.elapsed();
        let sent = writes * b as u64;
        rows.push(Row {
            frames_per_write: b,
            frames: sent,
            cpu_us_per_frame: cpu.as_secs_f64() * 1e6 / sent as f64,
            frames_per_s: sent as f64 / wall.as_secs_f64().max(1e-9),
        });
    }
    Ok(rows)
}

/// The rows as an aligned table.
pub fn table(connections: usize, frame_bytes: usize, rows: &[Row]) -> String {
    let mut out = format!(
        "floor: {connections} loopback sockets, {frame_bytes}-byte frames, writer thread CPU\n"
    );
    out.push_str("frames per write  frames      CPU per frame  frames/s\n");
    for r in rows {
        out.push_str(&format!(
            "{:<16}  {:<10}  {:>8.2} us    {:>10.0}\n",
            r.frames_per_write, r.frames, r.cpu_us_per_frame, r.frames_per_s
        ));
    }
    out
}
