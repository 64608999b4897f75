//! Exact training updates (`rde_train_updates`, default "exact") against real servers: two
//! writers that read the same rows both land, in the state a serial order of their steps gives
//! (params and slots, both slot layouts, standalone and a 3-master cluster); eight writers on
//! one id all finish with every update applied; "last_writer_wins" loses the update, as TFRA.
//! A step whose script meets a half-migrated slot is refused TRYAGAIN by the real server and
//! retried until it lands. The multi-process claims are in tests/python/test_exact_updates.py.

mod support;

use std::sync::Barrier;

use redis_embedding::{
    key_slot, stats, Config, ErrorKind, Init, KeyType, LookupOut, Optimizer, Slots, Starts, Step,
    Table, TableSpec, Trainer, ValueType,
};
use support::{f32s, i64_keys, serial, wait_for, Cluster, Server};

const DIM: usize = 2;

/// One worker: its own table handle and trainer, configured for `opt` in `layout`.
struct Worker {
    t: Table,
    tr: Trainer,
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Tfra,
    Fused,
}

fn slot_names(name: &str, opt: &Optimizer) -> Vec<String> {
    opt.slots().iter().map(|s| format!("{name}-{s}")).collect()
}

impl Worker {
    fn new(cfg: &Config, name: &str, opt: &Optimizer, layout: Layout) -> Worker {
        let t = Table::open(
            cfg.clone(),
            TableSpec::new(name, KeyType::I64, ValueType::F32, DIM),
        )
        .unwrap();
        let tr = Trainer::default();
        let k = opt.slots().len();
        let inits: Vec<f32> = (0..k).map(|s| opt.slot_init(s)).collect();
        let names = slot_names(name, opt);
        let slots = match layout {
            Layout::Tfra => Slots::Tables(&names),
            Layout::Fused => Slots::Fused(k),
        };
        tr.configure(&t, slots, &inits).unwrap();
        Worker { t, tr }
    }

    /// A training-mode lookup of `keys`; returns its ticket.
    fn lookup(&self, keys: &[i64]) -> u32 {
        let kb = i64_keys(keys);
        let mut out = vec![0u8; keys.len() * DIM * 4];
        let mut exists = vec![0u8; keys.len()];
        let out = LookupOut {
            values: &mut out,
            exists: &mut exists,
            remember: true,
        };
        let starts = Starts {
            init: Init::Constant(0.5),
            seed: 0,
        };
        self.tr
            .lookup(&self.t, &self.t.keys(&kb, &[]).unwrap(), starts, 0, out)
            .unwrap()
    }

    fn apply(&self, ticket: u32, n: usize, grads: &[f32], opt: &Optimizer, step: Step) {
        let ids: Vec<i64> = (0..n as i64).map(|p| ((ticket as i64) << 32) | p).collect();
        self.tr.apply(&self.t, &ids, grads, opt, step).unwrap();
    }

    fn stat(&self, name: &str) -> f64 {
        let snap = self.t.stats().snapshot();
        snap.into_iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// Params then each slot of `key`, as stored in `layout`.
fn stored(cfg: &Config, name: &str, opt: &Optimizer, layout: Layout, key: i64) -> Vec<f32> {
    let k = opt.slots().len();
    let read = |name: &str, dim: usize| {
        let t = Table::open(
            cfg.clone(),
            TableSpec::new(name, KeyType::I64, ValueType::F32, dim),
        )
        .unwrap();
        let kb = i64_keys(&[key]);
        let mut out = vec![0u8; dim * 4];
        let mut found = [0u8];
        t.find(
            &t.keys(&kb, &[]).unwrap(),
            &vec![0u8; dim * 4],
            &mut out,
            Some(&mut found),
        )
        .unwrap();
        assert_eq!(found, [1], "{name} holds key {key}");
        f32s(&out)
    };
    match layout {
        Layout::Fused => read(name, DIM * (1 + k)),
        Layout::Tfra => {
            let mut row = read(name, DIM);
            for slot in slot_names(name, opt) {
                row.extend(read(&slot, DIM));
            }
            row
        }
    }
}

/// The row a serial order of `steps` (each a summed gradient) leaves, from the initial row.
fn serial_row(opt: &Optimizer, steps: &[(Step, [f32; DIM])]) -> Vec<f32> {
    let k = opt.slots().len();
    let mut param = vec![0.5f32; DIM];
    let mut slots: Vec<f32> = (0..k)
        .flat_map(|s| std::iter::repeat_n(opt.slot_init(s), DIM))
        .collect();
    for (step, g) in steps {
        opt.apply(*step, &mut param, &mut slots, g);
    }
    param.extend(slots);
    param
}

fn optimizers() -> Vec<(Optimizer, Step)> {
    vec![
        Optimizer::parse(
            "adagrad",
            &[0.1, 1.0, 0.1, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        )
        .unwrap(),
        Optimizer::parse(
            "adam",
            &[
                0.01, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ],
        )
        .unwrap(),
    ]
}

/// Both workers look key 7 up (reading the same row), then A applies, then B: B's write finds
/// the row changed, is recomputed from A's result, and both updates are in the row, equal to
/// the serial order A then B. Key 8, only in A's batch, is written once.
fn two_writers_land_in_serial_order(cfg: &Config) {
    for (i, (opt, step)) in optimizers().into_iter().enumerate() {
        for layout in [Layout::Tfra, Layout::Fused] {
            let name = format!("emb{i}{layout:?}");
            let (a, b) = (
                Worker::new(cfg, &name, &opt, layout),
                Worker::new(cfg, &name, &opt, layout),
            );
            let (ta, tb) = (a.lookup(&[7, 8]), b.lookup(&[7]));
            a.apply(ta, 2, &[1.0, -2.0, 0.5, 0.5], &opt, step);
            b.apply(tb, 1, &[0.25, 4.0], &opt, step);
            let want = serial_row(&opt, &[(step, [1.0, -2.0]), (step, [0.25, 4.0])]);
            let what = format!("{opt:?} {layout:?}");
            assert_eq!(stored(cfg, &name, &opt, layout, 7), want, "{what}");
            assert_eq!(
                stored(cfg, &name, &opt, layout, 8),
                serial_row(&opt, &[(step, [0.5, 0.5])]),
                "{what}"
            );
            assert_eq!(
                (b.stat("update_conflicts"), b.stat("update_retry_rounds")),
                (1.0, 1.0),
                "{what}: B lost once, for key 7"
            );
            assert_eq!(a.stat("update_conflicts"), 0.0, "{what}");
        }
    }
}

#[test]
fn two_writers_of_one_row_land_in_serial_order_on_a_standalone_server() {
    let _serial = serial();
    let s = Server::start();
    two_writers_land_in_serial_order(&s.config(""));
}

#[test]
fn two_writers_of_one_row_land_in_serial_order_on_a_cluster() {
    let _serial = serial();
    let c = Cluster::start(3, 0);
    two_writers_land_in_serial_order(&c.config(r#""storage_slice": 6"#));
}

/// With "last_writer_wins" the same race loses A's update (TFRA's behaviour), which is what
/// the exact mode's test above would catch.
#[test]
fn last_writer_wins_loses_the_first_update() {
    let _serial = serial();
    let s = Server::start();
    let cfg = s.config(r#""rde_train_updates": "last_writer_wins""#);
    let (opt, step) =
        Optimizer::parse("sgd", &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let (a, b) = (
        Worker::new(&cfg, "emb", &opt, Layout::Fused),
        Worker::new(&cfg, "emb", &opt, Layout::Fused),
    );
    let (ta, tb) = (a.lookup(&[7]), b.lookup(&[7]));
    a.apply(ta, 1, &[1.0, 1.0], &opt, step);
    b.apply(tb, 1, &[1.0, 1.0], &opt, step);
    assert_eq!(stored(&cfg, "emb", &opt, Layout::Fused, 7), [-0.5, -0.5]);
    assert_eq!(b.stat("update_conflicts"), 0.0);
}

/// Eight writers step one id together: each step, all look it up (the same row), meet at a
/// barrier, and apply, so seven of the eight lose the first round. Every one finishes every
/// step (retries are bounded and some writer wins each round), and no update is lost: SGD at
/// lr 1 with gradient 1 ends at 0.5 − 8·steps exactly.
#[test]
fn eight_writers_on_one_id_all_finish_and_lose_nothing() {
    let _serial = serial();
    let s = Server::start();
    let cfg = s.config("");
    let (opt, step) =
        Optimizer::parse("sgd", &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    const WRITERS: usize = 8;
    const STEPS: usize = 25;
    let barrier = Barrier::new(WRITERS);
    let conflicts: f64 = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                sc.spawn(|| {
                    let w = Worker::new(&cfg, "emb", &opt, Layout::Tfra);
                    for _ in 0..STEPS {
                        let t = w.lookup(&[42]);
                        barrier.wait();
                        w.apply(t, 1, &[1.0, 1.0], &opt, step);
                        barrier.wait();
                    }
                    w.stat("update_conflicts")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let end = 0.5 - (WRITERS * STEPS) as f32;
    assert_eq!(stored(&cfg, "emb", &opt, Layout::Tfra, 42), [end, end]);
    // Each step all read the same row and one wins first: at least 7 conflicts per step.
    assert!(
        conflicts >= ((WRITERS - 1) * STEPS) as f64,
        "{conflicts} conflicts"
    );
}

fn counter(name: &str) -> u64 {
    stats().into_iter().find(|(n, _)| *n == name).unwrap().1
}

/// The bulk strings of a RESP array reply (`KEYS`).
fn bulk_strings(reply: &[u8]) -> Vec<Vec<u8>> {
    let text = reply
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    text.filter(|l| !l.is_empty() && !l.starts_with(b"*") && !l.starts_with(b"$"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// TRYAGAIN from a real server. In the TFRA layout the exact-update script names the params
/// bucket and the slot buckets, which share one hash tag; while their slot is half migrated
/// (the params bucket moved, the slot buckets not yet) the source answers the script
/// TRYAGAIN. A step allowed no retries fails with Unavailable naming TRYAGAIN and writes
/// nothing. A step started mid-migration waits: its lookup's chunk (an HMGET per table) is
/// refused the same way (ASKING would cover one of its commands only), and it retries until
/// the migration ends, then lands through MOVED, so the row holds both steps in serial order.
#[test]
fn a_step_during_a_slot_migration_is_refused_tryagain_and_lands_once_it_ends() {
    let _serial = serial();
    let c = Cluster::start(3, 0);
    let (opt, step) = Optimizer::parse(
        "adam",
        &[
            0.01, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    )
    .unwrap();
    let no_ttl = r#""expire_model_tag_in_seconds": -1"#;
    let w = Worker::new(
        &c.config(&format!(
            r#"{no_ttl}, "rde_max_retries": 1000, "rde_retry_backoff_ms": 10"#
        )),
        "mig",
        &opt,
        Layout::Tfra,
    );
    let once = Worker::new(
        &c.config(&format!(r#"{no_ttl}, "rde_max_retries": 0"#)),
        "mig",
        &opt,
        Layout::Tfra,
    );
    let t0 = w.lookup(&[7]);
    w.apply(t0, 1, &[1.0, -2.0], &opt, step);

    let bucket = w.t.buckets().name(0).to_vec();
    let slot = key_slot(&bucket) as usize;
    let count = slot.to_string();
    let owns = |n: &Server| n.cli(&[b"CLUSTER", b"COUNTKEYSINSLOT", count.as_bytes()]) != b":0\r\n";
    let from = c.nodes.iter().find(|n| owns(n)).expect("the bucket's node");
    let to = c.nodes.iter().find(|n| n.port != from.port).unwrap();
    let slot_buckets: Vec<Vec<u8>> = bulk_strings(&from.cli(&[b"KEYS", b"*"]))
        .into_iter()
        .filter(|k| *k != bucket && key_slot(k) == key_slot(&bucket))
        .collect();
    assert_eq!(
        slot_buckets.len(),
        2,
        "Adam's m and v buckets beside the params"
    );
    from.start_migrating(slot, to);
    // Read before the move (with no retries an ASK is not followed either).
    let lost = once.lookup(&[7]);
    from.migrate_keys(to, &[&bucket]);

    // No retries: the server refuses the script, and nothing of its step is written.
    let ids = [(lost as i64) << 32];
    let e = once
        .tr
        .apply(&once.t, &ids, &[100.0, 100.0], &opt, step)
        .expect_err("a step on a half-migrated slot with no retries");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("TRYAGAIN Multiple keys"), "{e}");

    let refusals = counter("refusals");
    std::thread::scope(|sc| {
        let stepping = sc.spawn(|| {
            let t1 = w.lookup(&[7]);
            w.apply(t1, 1, &[0.25, 4.0], &opt, step);
        });
        wait_for("two refusals of the step started mid-migration", 30, || {
            assert!(!stepping.is_finished(), "the step ended mid-migration");
            counter("refusals") >= refusals + 2
        });
        let moved: Vec<&[u8]> = slot_buckets.iter().map(Vec::as_slice).collect();
        from.migrate_keys(to, &moved);
        let to_id = to.node_id();
        for n in &c.nodes {
            n.set_slot(slot, b"NODE", &to_id);
        }
        stepping.join().unwrap();
    });
    let cfg = c.config(no_ttl);
    let want = serial_row(&opt, &[(step, [1.0, -2.0]), (step, [0.25, 4.0])]);
    assert_eq!(stored(&cfg, "mig", &opt, Layout::Tfra, 7), want);
}
