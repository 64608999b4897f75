//! Exact training updates (`rde_train_updates`, default "exact") against real servers: two
//! writers that read the same rows both land, in the state a serial order of their steps gives
//! (params and slots, both slot layouts, standalone and a 3-master cluster); eight writers on
//! one id all finish with every update applied; "last_writer_wins" loses the update, as TFRA.
//! The multi-process claims are in tests/python/test_exact_updates.py.

mod support;

use std::sync::Barrier;

use redis_embedding::{
    Config, Init, KeyType, LookupOut, Optimizer, Slots, Starts, Step, Table, TableSpec, Trainer,
    ValueType,
};
use support::{f32s, i64_keys, serial, Cluster, Server};

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
        Optimizer::parse("adagrad", &[0.1, 1.0, 0.1, 1e-7, 0.0, 0.0, 0.0]).unwrap(),
        Optimizer::parse("adam", &[0.01, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0, 0.0, 0.0]).unwrap(),
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
    let (opt, step) = Optimizer::parse("sgd", &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
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
    let (opt, step) = Optimizer::parse("sgd", &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
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
