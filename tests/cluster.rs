//! Cluster mode against a real 3-master Redis Cluster.

mod support;

use redis_embedding::{slot_tag_table, KeyType, Rows, Table, TableSpec, ValueType};
use support::{f32_bytes, f32s, i64_keys, redis_cli, Cluster, Server};

fn spec(name: &str) -> TableSpec {
    TableSpec::new(name, KeyType::I64, ValueType::F32, 2)
}

fn rows(keys: &[i64]) -> Vec<f32> {
    keys.iter().flat_map(|&k| [k as f32, -(k as f32)]).collect()
}

fn insert(t: &Table, keys: &[i64]) {
    let kb = i64_keys(keys);
    let vb = f32_bytes(&rows(keys));
    t.insert(
        &t.keys(&kb, &[]).unwrap(),
        &Rows::Fixed { data: &vb, row: 8 },
    )
    .unwrap();
}

fn find(t: &Table, keys: &[i64]) -> (Vec<f32>, Vec<u8>) {
    let kb = i64_keys(keys);
    let mut out = vec![0u8; keys.len() * 8];
    let mut ex = vec![0u8; keys.len()];
    t.find(
        &t.keys(&kb, &[]).unwrap(),
        &f32_bytes(&[0.5, 0.5]),
        &mut out,
        Some(&mut ex),
    )
    .unwrap();
    (f32s(&out), ex)
}

fn keys_on(node: &Server) -> usize {
    let out = node.cli(&[b"DBSIZE"]);
    String::from_utf8_lossy(&out)
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn buckets_spread_over_masters_and_every_op_works() {
    let c = Cluster::start(3, 0);
    let t = Table::open(
        c.config(r#""storage_slice": 3, "keys_sending_size": 50"#),
        spec("emb"),
    )
    .unwrap();
    // TFRA's topology rule: one bucket on the first slot of each master.
    let tags: Vec<String> = t
        .buckets()
        .names()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let t_of = |s: usize| format!("test:emb{{{}}}", slot_tag_table()[s]);
    assert_eq!(tags, [t_of(0), t_of(5461), t_of(10923)]);
    let keys: Vec<i64> = (0..3000).collect();
    insert(&t, &keys);
    assert_eq!(t.size().unwrap(), 3000);
    for n in &c.nodes {
        assert!(keys_on(n) >= 1, "a master holds no bucket");
    }
    let (v, ex) = find(&t, &[5, 3001, 2999, 5]);
    assert_eq!(v, [5., -5., 0.5, 0.5, 2999., -2999., 5., -5.]);
    assert_eq!(ex, [1, 0, 1, 1]);
    // low 32 bits mod 3 picks the bucket.
    let bucket1 = t.buckets().name(1).to_vec();
    let node_for = |b: &[u8]| {
        c.nodes
            .iter()
            .find(|n| n.cli(&[b"HEXISTS", b, &4i64.to_le_bytes()]) == b":1\r\n")
            .map(|n| n.port)
    };
    assert!(node_for(&bucket1).is_some());
    assert_eq!(t.export().unwrap().len, 3000);
    t.remove(&t.keys(&i64_keys(&[1, 2, 3]), &[]).unwrap())
        .unwrap();
    assert_eq!(t.size().unwrap(), 2997);
    t.clear().unwrap();
    assert_eq!(t.size().unwrap(), 0);
}

#[test]
fn reshard_during_traffic_fails_no_op_and_loses_no_write() {
    let c = Cluster::start(3, 0);
    let t = Table::open(
        c.config(r#""storage_slice": 3, "keys_sending_size": 64, "rde_max_retries": 20"#),
        spec("emb"),
    )
    .unwrap();
    let from = c.nodes[0].node_id();
    let to = c.nodes[1].node_id();
    let written = std::sync::atomic::AtomicI64::new(0);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut next = 0i64;
            // A guard against a hung reshard (a round count would be hit by a fast build).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            // Keep writing and reading until the reshard is over, then a little more.
            for round in 0.. {
                let batch: Vec<i64> = (next..next + 500).collect();
                insert(&t, &batch);
                let (_, ex) = find(&t, &batch);
                assert!(
                    ex.iter().all(|&e| e == 1),
                    "round {round}: a write was not readable"
                );
                next += 500;
                written.store(next, std::sync::atomic::Ordering::SeqCst);
                if std::time::Instant::now() > deadline {
                    panic!("reshard did not finish in 300 s");
                }
                if RESHARD_DONE.load(std::sync::atomic::Ordering::SeqCst) && round > 0 {
                    break;
                }
            }
        });
        // Move the first 3000 slots of master 0, which include its bucket's slot 0.
        redis_cli(&[
            "--cluster",
            "reshard",
            &c.nodes[0].addr(),
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "3000",
            "--cluster-yes",
            "--cluster-pipeline",
            "50",
        ]);
        RESHARD_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
    });
    let n = written.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(t.size().unwrap(), n);
    let keys: Vec<i64> = (0..n).collect();
    let (v, ex) = find(&t, &keys);
    assert!(ex.iter().all(|&e| e == 1));
    assert_eq!(v, rows(&keys));
    // Bucket 0's slot now lives on master 1.
    assert_eq!(keys_on(&c.nodes[0]), 0);
}

static RESHARD_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[test]
fn bucket_names_survive_adding_a_master() {
    let c = Cluster::start(3, 0);
    let cfg = c.config(r#""storage_slice": 3"#);
    let t = Table::open(cfg.clone(), spec("grow")).unwrap();
    let before = t.buckets().clone();
    let keys: Vec<i64> = (0..600).collect();
    insert(&t, &keys);
    drop(t);

    // A fourth master takes slots from the start of every range, so TFRA's topology rule would
    // now pick different first slots (and different bucket names).
    let extra = Server::cluster_node();
    redis_cli(&["--cluster", "add-node", &extra.addr(), &c.nodes[0].addr()]);
    let mut all = Cluster { nodes: c.nodes };
    all.nodes.push(extra);
    all.wait_ok();
    let id = all.nodes[3].node_id();
    redis_cli(&[
        "--cluster",
        "reshard",
        &all.nodes[0].addr(),
        "--cluster-from",
        "all",
        "--cluster-to",
        &id,
        "--cluster-slots",
        "4000",
        "--cluster-yes",
    ]);
    all.wait_ok();
    let nodes = String::from_utf8_lossy(&all.nodes[0].cli(&[b"CLUSTER", b"NODES"])).into_owned();
    let tfra_now = redis_embedding::topology_tags(&nodes, 3);
    let tags_before: Vec<String> = before
        .names()
        .iter()
        .map(|b| {
            String::from_utf8_lossy(&b[b.iter().position(|&x| x == b'{').unwrap()..]).into_owned()
        })
        .collect();
    assert_ne!(
        tfra_now, tags_before,
        "the topology change should move TFRA's tags"
    );

    let t = Table::open(cfg, spec("grow")).unwrap();
    assert_eq!(t.buckets(), &before);
    let (v, ex) = find(&t, &keys);
    assert!(ex.iter().all(|&e| e == 1));
    assert_eq!(v, rows(&keys));
}

#[test]
fn master_failover_in_a_cluster_with_replicas() {
    let c = Cluster::start(3, 1);
    let t = Table::open(
        c.config(r#""storage_slice": 3, "rde_max_retries": 30, "redis_connect_timeout": 300, "redis_socket_timeout": 500"#),
        spec("ha"),
    )
    .unwrap();
    let keys: Vec<i64> = (0..900).collect();
    insert(&t, &keys);
    // Let every replica catch up before the crash, so no acknowledged write is lost.
    c.wait_replicated();
    let masters: Vec<&Server> = c
        .nodes
        .iter()
        .filter(|n| String::from_utf8_lossy(&n.cli(&[b"ROLE"])).contains("master"))
        .collect();
    // Crash the master holding bucket 0.
    let victim = masters.iter().find(|m| keys_on(m) > 0).unwrap();
    victim.crash();
    // Writes and reads wait (bounded) for the replica to take over, then succeed.
    let more: Vec<i64> = (900..1200).collect();
    insert(&t, &more);
    let all: Vec<i64> = (0..1200).collect();
    let (v, ex) = find(&t, &all);
    let missing: Vec<usize> = (0..all.len()).filter(|&i| ex[i] != 1).collect();
    assert!(
        missing.is_empty(),
        "{} rows missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(v, rows(&all));
}

#[test]
fn topology_queries_are_spread_over_the_seeds() {
    let c = Cluster::start(3, 0);
    let cfg = c.config("");
    let before: Vec<u64> = c.nodes.iter().map(|n| n.calls("cluster|slots")).collect();
    for i in 0..30 {
        Table::open(cfg.clone(), spec(&format!("t{i}"))).unwrap();
    }
    let asked: Vec<u64> = c
        .nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.calls("cluster|slots") - b)
        .collect();
    assert_eq!(asked.iter().sum::<u64>(), 30);
    assert!(
        asked.iter().all(|&n| n > 0),
        "every seed should get some of the 30 queries: {asked:?}"
    );
}
