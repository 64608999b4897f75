//! Client cost of bench/loop.py's workloads without TensorFlow: 40 key sets of 16,384 int64
//! keys x 64 float32 are upserted, then `N` calls run over them: `lookup` (`Table::find` of
//! distinct present keys), `zipf` (of Zipf(1.2)-like draws, mostly repeats), `upsert` and
//! `zipf_upsert` (`Table::insert` of the same key sets). Prints the client process's CPU time
//! per key of the loop.
//!
//!     client_cost [N = 200] [lookup | zipf | upsert | zipf_upsert]
//!
//! CPU time moves with whatever else the machine runs. For an exact count that it does not
//! move, run it under callgrind and count only the loop (`measured_loop`, the N calls plus
//! one warm-up): the instructions per key are Ir / ((N + 1) × 16,384):
//!
//!     cargo build --release --example client_cost
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_loop*' \
//!         target/release/examples/client_cost 10 lookup
//!
//! It starts its own redis-server (tests/support) on a free port and stops it by pid.

use std::time::Instant;

use redis_embedding::{KeyType, Rows, Table, TableSpec, ValueType};

// The tests' redis-server harness: a free port (never 6379), stopped by pid on drop.
#[path = "../tests/support/mod.rs"]
mod support;

const BATCH: usize = 16_384;
const DIM: usize = 64;
const SETS: usize = 40;

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The buffers of one workload: upserts write `values`, lookups read into `out`.
struct Work<'a> {
    upsert: bool,
    values: &'a [u8],
    out: &'a mut [u8],
    dflt: &'a [u8],
}

#[inline(never)]
fn measured_loop(t: &Table, sets: &[Vec<u8>], calls: usize, w: &mut Work<'_>) {
    for i in 0..calls {
        let keys = t.keys(&sets[i % SETS], &[]).unwrap();
        if w.upsert {
            let rows = Rows::Fixed {
                data: w.values,
                row: DIM * 4,
            };
            t.insert(&keys, &rows).unwrap();
        } else {
            t.find(&keys, w.dflt, w.out, None).unwrap();
        }
    }
}

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let workload = std::env::args().nth(2).unwrap_or_else(|| "lookup".into());
    assert!(
        ["lookup", "zipf", "upsert", "zipf_upsert"].contains(&workload.as_str()),
        "workload: lookup, zipf, upsert or zipf_upsert"
    );
    let zipf = workload.starts_with("zipf");
    let server = support::Server::start();
    // No TTL, as bench/loop.py: no EXPIRE refresh on the measured path.
    let cfg = server.config(r#""expire_model_tag_in_seconds": -1"#);
    let spec = TableSpec::new("v", KeyType::I64, ValueType::F32, DIM);
    let t = Table::open(cfg, spec).unwrap();
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
    let mut work = Work {
        upsert: workload.ends_with("upsert"),
        values: &values,
        out: &mut out,
        dflt: &dflt,
    };
    measured_loop(&t, &sets, 1, &mut work);
    let (c0, w0) = (cpu_seconds(), Instant::now());
    measured_loop(&t, &sets, calls, &mut work);
    let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
    let keys = (calls * BATCH) as f64;
    println!(
        "{workload}: calls {calls}  client cpu {:.4} us/key  wall {:.4} us/key",
        cpu / keys * 1e6,
        wall / keys * 1e6
    );
}
