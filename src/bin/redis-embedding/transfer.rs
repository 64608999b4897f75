//! What `export`, `import` and `copy` share: the dtype options and the final summary.

use redis_embedding::admin::{Moved, ShapeHint};
use redis_embedding::{KeyType, ValueType};
use serde_json::json;

use crate::{ui, Ctx};

/// Key and value types, where stored sizes cannot tell them.
#[derive(clap::Args, Clone, Default)]
pub struct ShapeArgs {
    /// Key dtype: int64, int32 or string (default: int64 for 8-byte keys, int32 for 4-byte
    /// ones, else string; int64 for import).
    #[arg(long, value_name = "DTYPE", value_parser = key_type)]
    key_dtype: Option<KeyType>,
    /// Value dtype: float32 (default), float64, float16, bfloat16, int8, int32, int64, bool
    /// or string.
    #[arg(long, value_name = "DTYPE", value_parser = value_type)]
    value_dtype: Option<ValueType>,
    /// Elements per row (default: from the row size; required for string values).
    #[arg(long, value_name = "N")]
    dim: Option<usize>,
}

impl ShapeArgs {
    pub fn hint(&self) -> ShapeHint {
        ShapeHint {
            key_type: self.key_dtype,
            value_type: self.value_dtype,
            dim: self.dim,
        }
    }
}

pub fn key_type(s: &str) -> Result<KeyType, String> {
    KeyType::from_name(s).ok_or_else(|| "expected int64, int32 or string".into())
}

fn value_type(s: &str) -> Result<ValueType, String> {
    ValueType::from_name(s).ok_or_else(|| {
        "expected float32, float64, float16, bfloat16, int8, int32, int64, bool or string".into()
    })
}

/// Prints what `command` ("exported", "imported", "copied") did: JSON with `--json`, else a
/// line per table and a total.
pub fn summary(ctx: &Ctx, command: &str, moved: &[Moved]) {
    let rows: u64 = moved.iter().map(|m| m.rows).sum();
    let bytes: u64 = moved.iter().map(|m| m.bytes).sum();
    if ctx.json {
        ui::json(&json!({
            "command": command,
            "tables": moved.iter().map(|m| json!({
                "table": m.table,
                "to": m.to,
                "rows": m.rows,
                "bytes": m.bytes,
                "files": m.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "sampled": m.sampled,
            })).collect::<Vec<_>>(),
            "rows": rows,
            "bytes": bytes,
        }));
        return;
    }
    for m in moved {
        let checked = if m.sampled > 0 {
            format!(", {} sampled rows identical", m.sampled)
        } else {
            String::new()
        };
        println!(
            "{command} {} to {}: {} rows, {}{checked}",
            m.table,
            m.to,
            m.rows,
            ui::size(m.bytes)
        );
    }
    println!(
        "{command} {} table(s): {rows} rows, {}",
        moved.len(),
        ui::size(bytes)
    );
}
