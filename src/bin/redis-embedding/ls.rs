//! `ls`: model tags and tables.

use std::process::ExitCode;

use redis_embedding::admin::TableInfo;
use redis_embedding::Error;
use serde_json::json;

use crate::{ui, Ctx, Select};

/// Arguments of `ls`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: Select,
    /// Also list each bucket.
    #[arg(long)]
    buckets: bool,
}

/// A table as JSON.
pub fn table_json(t: &TableInfo) -> serde_json::Value {
    json!({
        "model_tag": t.model_tag,
        "table": t.name,
        "layout": t.layout.as_str(),
        "recorded": t.recorded_tags.is_some(),
        "buckets": t.buckets.len(),
        "rows": t.rows(),
        "bytes": t.bytes(),
        "ttl_ms": t.ttl_ms(),
        "key_bytes": t.key_bytes,
        "row_bytes": t.row_bytes,
        "bucket_list": t.buckets.iter().map(|b| json!({
            "key": String::from_utf8_lossy(&b.key),
            "server": b.server,
            "rows": b.rows,
            "bytes": b.bytes,
            "ttl_ms": b.ttl_ms,
        })).collect::<Vec<_>>(),
    })
}

/// Lists the tables.
pub fn run(ctx: &Ctx, a: Args) -> Result<ExitCode, Error> {
    let admin = ctx.admin()?;
    let tables = admin.tables_reporting(&a.select.filter(), &ui::Bars::new())?;
    if ctx.json {
        ui::json(&json!({ "tables": tables.iter().map(table_json).collect::<Vec<_>>() }));
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |v: Option<usize>| v.map_or_else(|| "var".to_owned(), |v| v.to_string());
    let rows: Vec<Vec<String>> = tables
        .iter()
        .map(|t| {
            vec![
                t.model_tag.clone(),
                t.name.clone(),
                t.layout.as_str().to_owned(),
                t.buckets.len().to_string(),
                t.rows().to_string(),
                ui::size(t.bytes()),
                ui::ttl(t.ttl_ms()),
                opt(t.key_bytes),
                opt(t.row_bytes),
            ]
        })
        .collect();
    ui::table(
        &[
            "MODEL_TAG",
            "TABLE",
            "LAYOUT",
            "BUCKETS",
            "ROWS",
            "MEMORY",
            "TTL",
            "KEY_B",
            "ROW_B",
        ],
        &rows,
    );
    if a.buckets {
        println!();
        let rows: Vec<Vec<String>> = tables
            .iter()
            .flat_map(|t| {
                t.buckets.iter().map(|b| {
                    vec![
                        String::from_utf8_lossy(&b.key).into_owned(),
                        b.server.clone(),
                        b.rows.to_string(),
                        ui::size(b.bytes),
                        ui::ttl(b.ttl_ms),
                    ]
                })
            })
            .collect();
        ui::table(&["BUCKET", "SERVER", "ROWS", "MEMORY", "TTL"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
