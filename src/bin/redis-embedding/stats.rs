//! `stats`: server figures and rows per table and server, refreshed with `--watch`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use redis_embedding::admin::{Admin, ServerStats, TableInfo};
use redis_embedding::Error;
use serde_json::json;

use crate::{ui, Ctx, Select};

/// Arguments of `stats`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: Select,
    /// Refresh every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<f64>,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Rows and memory of each table on each server.
fn per_server(tables: &[TableInfo]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m = BTreeMap::new();
    for t in tables {
        for b in &t.buckets {
            let e = m.entry((t.full_name(), b.server.clone())).or_insert((0, 0));
            e.0 += b.rows;
            e.1 += b.bytes;
        }
    }
    m
}

fn hit_rate(s: &ServerStats) -> Option<f64> {
    let all = s.keyspace_hits + s.keyspace_misses;
    (all > 0).then(|| s.keyspace_hits as f64 / all as f64)
}

fn as_json(servers: &[ServerStats], tables: &[TableInfo]) -> serde_json::Value {
    json!({
        "servers": servers.iter().map(|s| json!({
            "server": s.addr,
            "keys": s.keys,
            "used_memory": s.used_memory,
            "maxmemory": s.maxmemory,
            "maxmemory_policy": s.maxmemory_policy,
            "evicted_keys": s.evicted_keys,
            "keyspace_hits": s.keyspace_hits,
            "keyspace_misses": s.keyspace_misses,
            "hit_rate": hit_rate(s),
            "ops_per_sec": s.ops_per_sec,
            "connected_clients": s.connected_clients,
            "replicas": s.replicas.iter().map(|r| json!({
                "replica": r.addr, "lag_bytes": r.lag_bytes, "lag_secs": r.lag_secs,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tables": per_server(tables).into_iter().map(|((t, s), (rows, bytes))| json!({
            "table": t, "server": s, "rows": rows, "bytes": bytes,
        })).collect::<Vec<_>>(),
    })
}

fn print(servers: &[ServerStats], tables: &[TableInfo]) {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let lag = s.replicas.iter().map(|r| r.lag_bytes).max();
            vec![
                s.addr.clone(),
                s.keys.to_string(),
                ui::size(s.used_memory),
                if s.maxmemory == 0 {
                    "-".into()
                } else {
                    ui::size(s.maxmemory)
                },
                s.maxmemory_policy.clone(),
                s.evicted_keys.to_string(),
                s.keyspace_hits.to_string(),
                s.keyspace_misses.to_string(),
                hit_rate(s).map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
                s.ops_per_sec.to_string(),
                s.replicas.len().to_string(),
                lag.map_or("-".into(), |l| format!("{l}B")),
            ]
        })
        .collect();
    ui::table(
        &[
            "SERVER",
            "KEYS",
            "MEMORY",
            "MAXMEMORY",
            "POLICY",
            "EVICTED",
            "HITS",
            "MISSES",
            "HIT%",
            "OPS/S",
            "REPLICAS",
            "REPL_LAG",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = per_server(tables)
        .into_iter()
        .map(|((t, s), (rows, bytes))| vec![t, s, rows.to_string(), ui::size(bytes)])
        .collect();
    ui::table(&["TABLE", "SERVER", "ROWS", "MEMORY"], &rows);
}

fn once(ctx: &Ctx, admin: &Admin, a: &Args) -> Result<(), Error> {
    let servers = admin.server_stats()?;
    let tables = admin.tables_reporting(&a.select.filter(), &ui::Bars::new())?;
    if ctx.json {
        println!("{}", as_json(&servers, &tables));
    } else {
        print(&servers, &tables);
    }
    Ok(())
}

/// Prints the figures once, or every `--watch` seconds.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let Some(secs) = a.watch else {
        once(ctx, &admin, &a)?;
        return Ok(ExitCode::SUCCESS);
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(Error::invalid(format!(
            "--watch {secs}: give a positive number of seconds"
        )));
    }
    let clear = !ctx.json && std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        once(ctx, &admin, &a)?;
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}
