//! The fused sparse optimizer step (`Trainer`) against a real standalone redis-server: both
//! slot layouts, a 3-master cluster, duplicate keys, and the pending-lookup bookkeeping.

mod support;

use redis_embedding::{
    Init, KeyType, LookupOut, Optimizer, Slots, Starts, Table, TableSpec, Trainer, ValueType,
};
use support::{f32s, i64_keys, serial, Cluster, Server};

const DIM: usize = 2;

fn table(cfg: redis_embedding::Config, name: &str, dim: usize) -> Table {
    Table::open(cfg, TableSpec::new(name, KeyType::I64, ValueType::F32, dim)).unwrap()
}

fn starts() -> Starts {
    Starts {
        init: Init::Constant(0.5),
        seed: 0,
    }
}

/// A training-mode lookup: the params and the ticket.
fn lookup(tr: &Trainer, t: &Table, keys: &[i64]) -> (Vec<f32>, u32) {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * DIM * 4];
    let mut exists = vec![0u8; keys.len()];
    let out_ = LookupOut {
        values: &mut out,
        exists: &mut exists,
        remember: true,
    };
    let ticket = tr
        .lookup(t, &t.keys(&kb, &[]).unwrap(), starts(), 0, out_)
        .unwrap();
    (f32s(&out), ticket)
}

fn ids(ticket: u32, n: usize) -> Vec<i64> {
    (0..n as i64).map(|p| ((ticket as i64) << 32) | p).collect()
}

fn read(t: &Table, keys: &[i64], dim: usize) -> Vec<f32> {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * dim * 4];
    let dflt = vec![0u8; dim * 4];
    t.find(&t.keys(&kb, &[]).unwrap(), &dflt, &mut out, None)
        .unwrap();
    f32s(&out)
}

fn adagrad() -> (Optimizer, redis_embedding::Step) {
    Optimizer::parse(
        "adagrad",
        &[0.1, 1.0, 0.1, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    )
    .unwrap()
}

/// Adagrad's expected row after one step from `p` with accumulator 0.1 and gradient `g`.
fn adagrad_row(p: f32, g: f32) -> (f32, f32) {
    let acc = 0.1f32 + g * g;
    (p - (0.1 * g) / (acc + 1e-7f32).sqrt(), acc)
}

fn check_step(cfg: redis_embedding::Config) {
    let params = table(cfg.clone(), "emb-parameter", DIM);
    let acc = table(cfg, "emb-acc", DIM);
    let tr = Trainer::default();
    let names = ["emb-acc".to_owned()];
    tr.configure(&params, Slots::Tables(&names), &[0.1])
        .unwrap();
    let keys = [5i64, 9, 5, 1 << 40];
    let (rows, ticket) = lookup(&tr, &params, &keys);
    assert_eq!(
        rows,
        vec![0.5; 8],
        "missing rows start from the initializer"
    );
    let grads = [1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0, -1.0, 0.5];
    let (opt, step) = adagrad();
    let n = tr
        .apply(&params, &ids(ticket, 4), &grads, &opt, step)
        .unwrap();
    assert_eq!(n, 3, "duplicate key 5 is one row");
    // The handle table counts the step once, as train_lookup and train_apply (not as the
    // find and insert they run): 4 key positions looked up, none stored yet; 3 rows of
    // params + 1 slot written.
    let st = |name: &str| {
        let snap = params.stats().snapshot();
        snap.into_iter().find(|(n, _)| n == name).unwrap().1
    };
    assert_eq!((st("lookups"), st("hits"), st("misses")), (4.0, 0.0, 4.0));
    assert_eq!(st("rows_written"), 3.0);
    assert_eq!(st("bytes_out"), (3 * 2 * DIM * 4) as f64);
    assert_eq!(
        (st("train_lookup_calls"), st("train_apply_calls")),
        (1.0, 1.0)
    );
    assert_eq!((st("find_calls"), st("insert_calls")), (0.0, 0.0));
    let (p5, a5) = adagrad_row(0.5, 4.0); // 1 + 3: the duplicate's gradients are summed
    let (p9, a9) = adagrad_row(0.5, 2.0);
    let got = read(&params, &[5, 9], DIM);
    assert!(
        (got[0] - p5).abs() < 1e-7 && (got[2] - p9).abs() < 1e-7,
        "{got:?}"
    );
    assert_eq!(read(&acc, &[5, 9], DIM)[..3], [a5, a5, a9]);
}

#[test]
fn a_step_updates_params_and_slot_tables_on_a_standalone_server() {
    let _serial = serial();
    let s = Server::start();
    check_step(s.config(""));
}

#[test]
fn a_step_updates_params_and_slot_tables_on_a_cluster() {
    let _serial = serial();
    let c = Cluster::start(3, 0);
    check_step(c.config(r#""storage_slice": 6"#));
}

#[test]
fn the_fused_layout_reads_and_writes_one_wide_row_per_key() {
    let _serial = serial();
    let s = Server::start();
    let handle = table(s.config(""), "f-fused", DIM);
    let tr = Trainer::default();
    tr.configure(&handle, Slots::Fused(1), &[0.1]).unwrap();
    let (_, ticket) = lookup(&tr, &handle, &[3, 3]);
    let (opt, step) = adagrad();
    tr.apply(&handle, &ids(ticket, 2), &[1.0; 4], &opt, step)
        .unwrap();
    let wide = table(s.config(""), "f-fused", DIM * 2);
    let (p, a) = adagrad_row(0.5, 2.0);
    let row = read(&wide, &[3], DIM * 2);
    assert!(
        (row[0] - p).abs() < 1e-7 && (row[2] - a).abs() < 1e-7,
        "{row:?}"
    );
    // The next step starts from the stored wide row, slots included.
    let (params, ticket) = lookup(&tr, &handle, &[3]);
    assert_eq!(params, row[..DIM]);
    tr.apply(&handle, &ids(ticket, 1), &[1.0; 2], &opt, step)
        .unwrap();
    assert!((read(&wide, &[3], DIM * 2)[2] - (a + 1.0)).abs() < 1e-6);
}

#[test]
fn each_lookup_is_applied_once_and_only_the_newest_are_kept() {
    let _serial = serial();
    let s = Server::start();
    let t = table(s.config(""), "p-parameter", DIM);
    let tr = Trainer::default();
    tr.configure(&t, Slots::Tables(&[]), &[]).unwrap();
    let sgd = Optimizer::parse("sgd", &[0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let (_, first) = lookup(&tr, &t, &[1]);
    tr.apply(&t, &ids(first, 1), &[1.0; 2], &sgd.0, sgd.1)
        .unwrap();
    let again = tr
        .apply(&t, &ids(first, 1), &[1.0; 2], &sgd.0, sgd.1)
        .unwrap_err();
    assert!(again.to_string().contains("not pending"), "{again}");
    let (_, old) = lookup(&tr, &t, &[1]);
    for _ in 0..64 {
        lookup(&tr, &t, &[2]);
    }
    let evicted = tr
        .apply(&t, &ids(old, 1), &[1.0; 2], &sgd.0, sgd.1)
        .unwrap_err();
    assert!(
        evicted.to_string().contains("only the last 64"),
        "{evicted}"
    );
    let past_end = tr
        .apply(
            &t,
            &[((old as i64 + 64) << 32) | 5],
            &[1.0; 2],
            &sgd.0,
            sgd.1,
        )
        .unwrap_err();
    assert!(past_end.to_string().contains("position 5"), "{past_end}");
}

#[test]
fn a_mismatched_optimizer_or_gradient_is_refused_naming_what() {
    let _serial = serial();
    let s = Server::start();
    let t = table(s.config(""), "m-parameter", DIM);
    let tr = Trainer::default();
    let (_, ticket) = lookup(&tr, &t, &[1]);
    let sgd = Optimizer::parse("sgd", &[0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let unconfigured = tr
        .apply(&t, &ids(ticket, 1), &[1.0; 2], &sgd.0, sgd.1)
        .unwrap_err();
    assert!(unconfigured.to_string().contains("no optimizer configured"));
    tr.configure(&t, Slots::Tables(&[]), &[]).unwrap();
    let (opt, step) = adagrad();
    let slots = tr
        .apply(&t, &ids(ticket, 1), &[1.0; 2], &opt, step)
        .unwrap_err();
    assert!(slots.to_string().contains("keeps 1 slots"), "{slots}");
    let short = tr
        .apply(&t, &ids(ticket, 1), &[1.0; 3], &sgd.0, sgd.1)
        .unwrap_err();
    assert!(short
        .to_string()
        .contains("gradient must hold 1 rows of dim 2"));
}

fn counter(name: &str) -> u64 {
    redis_embedding::stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[test]
fn params_and_slots_share_one_pipeline_per_server_each_way() {
    let _serial = serial();
    let s = Server::start();
    let params = table(s.config(""), "one-parameter", DIM);
    let tr = Trainer::default();
    let names = ["one-m".to_owned(), "one-v".to_owned()];
    tr.configure(&params, Slots::Tables(&names), &[0.0, 0.0])
        .unwrap();
    // A first step creates the buckets, whose TTL (TFRA's default 7 days) is then armed.
    let adam = Optimizer::parse(
        "adam",
        &[
            0.1, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    )
    .unwrap();
    let (_, first) = lookup(&tr, &params, &[1, 2, 3]);
    tr.apply(&params, &ids(first, 3), &[0.0; 6], &adam.0, adam.1)
        .unwrap();
    // Three tables' reads in one pipeline (the per-table path takes three).
    let p0 = counter("pipelines");
    let (_, ticket) = lookup(&tr, &params, &[1, 2, 3]);
    assert_eq!(
        counter("pipelines") - p0,
        1,
        "one read pipeline for three tables"
    );
    let adam = Optimizer::parse(
        "adam",
        &[
            0.1, 1.0, 0.9, 0.999, 1e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    )
    .unwrap();
    let p1 = counter("pipelines");
    tr.apply(&params, &ids(ticket, 3), &[1.0; 6], &adam.0, adam.1)
        .unwrap();
    assert_eq!(
        counter("pipelines") - p1,
        1,
        "one write pipeline for three tables"
    );
    let m = table(s.config(""), "one-m", DIM);
    assert!(read(&m, &[1, 2, 3], DIM)
        .iter()
        .all(|&v| (v - 0.1).abs() < 1e-6));
}
