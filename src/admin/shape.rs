//! What a table's rows are, for the commands that move them: key and value types, `dim` and
//! the stored form, inferred from the catalog's sampled sizes or given by the operator; and a
//! [`Batch`] that turns stored rows into tensor rows (compact storage widened to float32,
//! string rows split into their elements) ready for a file or [`crate::Table::insert`].

use super::TableInfo;
use crate::codec::{decode_str_row, KeyType, Keys, Rows, Storage, ValueType};
use crate::error::{Error, Result};
use crate::table::TableSpec;

/// What the operator says about the rows, where sizes cannot tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapeHint {
    /// Key dtype (default: int64 when the sampled keys are all 8 bytes, int32 when all 4,
    /// else string).
    pub key_type: Option<KeyType>,
    /// Value dtype (default float32).
    pub value_type: Option<ValueType>,
    /// Elements per row (default: the stored row size over the element size; required for
    /// string values).
    pub dim: Option<usize>,
}

/// A table's rows, as stored and as tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Key dtype.
    pub key_type: KeyType,
    /// Value dtype of the tensors.
    pub value_type: ValueType,
    /// Elements per row.
    pub dim: usize,
    /// How float32 rows are stored (`rde_value_storage` of the config holding them).
    pub storage: Storage,
}

impl Shape {
    /// [`Shape::infer`] for each of `tables`, all checked before any is moved.
    pub(crate) fn infer_all(
        tables: &[TableInfo],
        hint: &ShapeHint,
        storage: Storage,
    ) -> Result<Vec<Shape>> {
        tables
            .iter()
            .map(|t| Shape::infer(t, hint, storage))
            .collect()
    }

    /// The shape of `t`'s rows under `storage`, from `hint` and the sampled sizes.
    pub(crate) fn infer(t: &TableInfo, hint: &ShapeHint, storage: Storage) -> Result<Shape> {
        let key_type = hint.key_type.unwrap_or(match t.key_bytes {
            Some(8) => KeyType::I64,
            Some(4) => KeyType::I32,
            None if t.rows() == 0 => KeyType::I64,
            _ => KeyType::Str,
        });
        let value_type = hint.value_type.unwrap_or(ValueType::F32);
        let name = t.full_name();
        if storage != Storage::Native && value_type != ValueType::F32 {
            return Err(Error::invalid(format!(
                "{name}: the config stores rows compactly (rde_value_storage), which only \
                 float32 tables do, not {}",
                value_type.tf_name()
            )));
        }
        let elem = storage.stored_type(value_type).elem_size();
        let dim = match (hint.dim, elem, t.row_bytes) {
            (Some(d), _, _) => d,
            (None, None, _) => {
                return Err(Error::invalid(format!(
                    "{name}: string values need --dim (elements per row)"
                )))
            }
            (None, Some(_), None) if t.rows() == 0 => 1,
            (None, Some(_), None) => {
                return Err(Error::data(format!(
                    "{name}: its sampled rows differ in size, so dim cannot be inferred: \
                     run `redis-embedding check`, or pass --dim"
                )))
            }
            (None, Some(e), Some(r)) if r % e == 0 && r > 0 => r / e,
            (None, Some(e), Some(r)) => {
                return Err(Error::data(format!(
                    "{name}: its rows are {r} bytes, not a whole number of {e}-byte {} \
                     elements: pass --value-dtype",
                    storage.stored_type(value_type).tf_name()
                )))
            }
        };
        if dim == 0 {
            return Err(Error::invalid(format!("{name}: dim must be at least 1")));
        }
        Ok(Shape {
            key_type,
            value_type,
            dim,
            storage,
        })
    }

    /// Bytes of a stored row (0 for strings).
    pub(crate) fn stored_row(&self) -> usize {
        self.storage
            .stored_type(self.value_type)
            .elem_size()
            .map_or(0, |e| e * self.dim)
    }

    /// Bytes of a tensor row (0 for strings).
    pub(crate) fn tensor_row(&self) -> usize {
        self.value_type.elem_size().map_or(0, |e| e * self.dim)
    }

    /// The spec of a table named `name` holding these rows.
    pub(crate) fn spec(&self, name: &str) -> TableSpec {
        TableSpec::new(name, self.key_type, self.value_type, self.dim)
    }
}

/// Rows of one page as tensor rows.
pub(crate) struct Batch {
    shape: Shape,
    keys: Vec<u8>,
    key_offs: Vec<u64>,
    values: Vec<u8>,
    value_offs: Vec<u64>,
    rows: usize,
}

impl Batch {
    pub(crate) fn new(shape: Shape) -> Batch {
        Batch {
            shape,
            keys: Vec::new(),
            key_offs: vec![0],
            values: Vec::new(),
            value_offs: vec![0],
            rows: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.key_offs.truncate(1);
        self.values.clear();
        self.value_offs.truncate(1);
        self.rows = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Adds one stored row; the error says what is wrong with it (the caller names where).
    pub(crate) fn push(&mut self, key: &[u8], stored: &[u8]) -> std::result::Result<(), String> {
        let s = self.shape;
        if let Some(w) = s.key_type.width().filter(|&w| w != key.len()) {
            return Err(format!(
                "the key has {} bytes, not {w} (pass --key-dtype string for string keys)",
                key.len()
            ));
        }
        let row = s.stored_row();
        if row == 0 {
            let (bytes, offs) = (self.values.len(), self.value_offs.len());
            if let Err(why) = decode_str_row(stored, s.dim, &mut self.values, &mut self.value_offs)
            {
                self.values.truncate(bytes);
                self.value_offs.truncate(offs);
                return Err(format!("the stored string row is malformed: {why}"));
            }
        } else if stored.len() != row {
            return Err(format!(
                "the row has {} bytes, the table's rows are {row} (run `redis-embedding check`)",
                stored.len()
            ));
        } else {
            let at = self.values.len();
            self.values.resize(at + s.tensor_row(), 0);
            s.storage.decode(stored, &mut self.values[at..]);
        }
        self.keys.extend_from_slice(key);
        self.key_offs.push(self.keys.len() as u64);
        self.rows += 1;
        Ok(())
    }

    pub(crate) fn keys(&self) -> Result<Keys<'_>> {
        Keys::new(self.shape.key_type, &self.keys, &self.key_offs)
    }

    pub(crate) fn rows(&self) -> Rows<'_> {
        match self.shape.tensor_row() {
            0 => Rows::Str {
                data: &self.values,
                offsets: &self.value_offs,
                dim: self.shape.dim,
            },
            row => Rows::Fixed {
                data: &self.values,
                row,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{BucketInfo, LayoutKind};

    fn info(key_bytes: Option<usize>, row_bytes: Option<usize>, rows: u64) -> TableInfo {
        TableInfo {
            model_tag: "m".into(),
            name: "emb".into(),
            prefix: b"m:emb".to_vec(),
            layout: LayoutKind::Tfra,
            recorded_tags: None,
            spread: false,
            buckets: vec![BucketInfo {
                key: b"m:emb{1}".to_vec(),
                server: "h:1".into(),
                rows,
                bytes: 0,
                ttl_ms: None,
            }],
            key_bytes,
            row_bytes,
        }
    }

    #[test]
    fn types_and_dim_come_from_the_sampled_sizes_unless_given() {
        let n = ShapeHint::default();
        let s = Shape::infer(&info(Some(8), Some(16), 5), &n, Storage::Native).unwrap();
        assert_eq!(
            (s.key_type, s.value_type, s.dim),
            (KeyType::I64, ValueType::F32, 4)
        );
        let s = Shape::infer(&info(None, Some(16), 5), &n, Storage::Bf16).unwrap();
        assert_eq!(
            (s.key_type, s.dim, s.stored_row(), s.tensor_row()),
            (KeyType::Str, 8, 16, 32)
        );
        let s = Shape::infer(&info(Some(4), Some(16), 5), &n, Storage::Native).unwrap();
        assert_eq!(s.key_type, KeyType::I32);
        let e = Shape::infer(&info(Some(8), None, 5), &n, Storage::Native).unwrap_err();
        assert!(e.message().contains("--dim"), "{e}");
        let e = Shape::infer(&info(Some(8), Some(6), 5), &n, Storage::Native).unwrap_err();
        assert!(e.message().contains("--value-dtype"), "{e}");
        let strs = ShapeHint {
            value_type: Some(ValueType::Str),
            ..n
        };
        let e = Shape::infer(&info(Some(8), None, 5), &strs, Storage::Native).unwrap_err();
        assert!(e.message().contains("--dim"), "{e}");
        let e = Shape::infer(&info(Some(8), Some(8), 5), &strs, Storage::Bf16).unwrap_err();
        assert!(e.message().contains("float32"), "{e}");
    }

    #[test]
    fn a_batch_widens_compact_rows_splits_strings_and_names_bad_rows() {
        let shape = |value_type, storage, dim| Shape {
            key_type: KeyType::I64,
            value_type,
            dim,
            storage,
        };
        let mut b = Batch::new(shape(ValueType::F32, Storage::Bf16, 2));
        let stored: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        b.push(&7i64.to_le_bytes(), &stored).unwrap();
        assert!(b
            .push(&[1, 2], &stored)
            .unwrap_err()
            .contains("--key-dtype"));
        assert!(b
            .push(&8i64.to_le_bytes(), &[0; 3])
            .unwrap_err()
            .contains("3 bytes"));
        let Rows::Fixed { data, row: 8 } = b.rows() else {
            panic!("fixed rows of 8 bytes")
        };
        let want: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!((b.len(), data), (1, want.as_slice()));

        let mut s = Batch::new(shape(ValueType::Str, Storage::Native, 2));
        let row = [&2u32.to_le_bytes()[..], b"ab", &0u32.to_le_bytes()].concat();
        s.push(&1i64.to_le_bytes(), &row).unwrap();
        assert!(s.push(&2i64.to_le_bytes(), &row[..5]).is_err());
        let mut again = Vec::new();
        s.rows().encode(0, &mut again);
        assert_eq!((s.len(), again), (1, row));
    }
}
