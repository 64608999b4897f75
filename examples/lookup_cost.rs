//! Client cost of lookups, bench/loop.py's workloads without TensorFlow: 40 key sets of
//! 16,384 int64 keys x 64 float32 are upserted, then `N` calls of `Table::find` run over
//! them: `lookup` (distinct present keys) or `zipf` (Zipf(1.2)-like draws, mostly repeats).
//! Prints the client process's CPU time per key of the loop.
//!
//!     lookup_cost [N = 200] [lookup | zipf]
//!
//! CPU time moves with whatever else the machine runs. For an exact count that it does not
//! move, run it under callgrind and count only the loop (`lookup_loop`, the N calls plus one
//! warm-up): the instructions per key are Ir / ((N + 1) × 16,384):
//!
//!     cargo build --release --example lookup_cost
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*lookup_loop*' \
//!         target/release/examples/lookup_cost 10
//!
//! It starts its own redis-server on a free port (never 6379) and stops it by pid.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use redis_embedding::{Config, KeyType, Rows, Table, TableSpec, ValueType};

const BATCH: usize = 16_384;
const DIM: usize = 64;
const SETS: usize = 40;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[inline(never)]
fn lookup_loop(t: &Table, sets: &[Vec<u8>], calls: usize, out: &mut [u8], dflt: &[u8]) {
    for i in 0..calls {
        let keys = t.keys(&sets[i % SETS], &[]).unwrap();
        t.find(&keys, dflt, out, None).unwrap();
    }
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let zipf = std::env::args().nth(2).is_some_and(|w| w == "zipf");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_ne!(port, 6379);
    let dir = std::env::temp_dir().join(format!("rde-lookup-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH"),
    );
    let cfg = Config::from_json(&format!(
        r#"{{"redis_connection_mode": 2, "redis_host_ip": ["127.0.0.1"], "redis_host_port": [{port}], "table_store_mode": 2, "expire_model_tag_in_seconds": -1}}"#
    ))
    .unwrap();
    let spec = TableSpec::new("v", KeyType::I64, ValueType::F32, DIM);
    let start = Instant::now();
    let t = loop {
        match Table::open(cfg.clone(), spec.clone()) {
            Ok(t) => break t,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Zipf(1.2)-like draws: a discrete Pareto sample (P(K >= k) = k^-0.2) from a fixed
    // xorshift stream, modulo 10^7, as bench/loop.py's `rng.zipf(1.2) % 10_000_000`.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut draw = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        (u.powf(-1.0 / 0.2).min(1e18) as i64) % 10_000_000
    };
    let sets: Vec<Vec<u8>> = (0..SETS)
        .map(|s| {
            (0..BATCH)
                .flat_map(|i| {
                    let k = if zipf {
                        draw()
                    } else {
                        10i64.pow(12) + (s * BATCH + i) as i64
                    };
                    k.to_le_bytes()
                })
                .collect()
        })
        .collect();
    let values: Vec<u8> = (0..BATCH * DIM)
        .flat_map(|i| ((i % 997) as f32 * 0.001).to_le_bytes())
        .collect();
    for s in &sets {
        let keys = t.keys(s, &[]).unwrap();
        t.insert(
            &keys,
            &Rows::Fixed {
                data: &values,
                row: DIM * 4,
            },
        )
        .unwrap();
    }
    let mut out = vec![0u8; BATCH * DIM * 4];
    let dflt = vec![0u8; DIM * 4];
    // One warm-up call (connection, buffers), outside the loop.
    lookup_loop(&t, &sets, 1, &mut out, &dflt);
    let (c0, w0) = (cpu_seconds(), Instant::now());
    lookup_loop(&t, &sets, calls, &mut out, &dflt);
    let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let keys = (calls * BATCH) as f64;
    println!(
        "calls {calls}  client cpu {:.4} us/key  wall {:.4} us/key",
        cpu / keys * 1e6,
        wall / keys * 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}
