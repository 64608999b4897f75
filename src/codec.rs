//! Key and value encodings: how a tensor row becomes hash-field and hash-value bytes (TFRA's
//! layout), and back.

use crate::error::{Error, Result};

/// Key dtype of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// int32, stored as 4 little-endian bytes.
    I32,
    /// int64, stored as 8 little-endian bytes.
    I64,
    /// string, stored as its bytes.
    Str,
}

impl KeyType {
    /// From TensorFlow's `DataType` enum value.
    pub fn from_tf(dtype: i32) -> Result<Self> {
        match dtype {
            3 => Ok(KeyType::I32),
            9 => Ok(KeyType::I64),
            7 => Ok(KeyType::Str),
            d => Err(Error::invalid(format!(
                "key_dtype {} is not supported: use int32, int64 or string",
                tf_name(d)
            ))),
        }
    }

    /// The dtype's name (`int32`, `int64`, `string`).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::I32 => "int32",
            KeyType::I64 => "int64",
            KeyType::Str => "string",
        }
    }

    /// The key dtype called `name` ([`KeyType::name`]).
    pub fn from_name(name: &str) -> Option<KeyType> {
        [KeyType::I32, KeyType::I64, KeyType::Str]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// Bytes per key, or None for strings.
    pub fn width(self) -> Option<usize> {
        match self {
            KeyType::I32 => Some(4),
            KeyType::I64 => Some(8),
            KeyType::Str => None,
        }
    }

    /// The key as a human reads it, for error messages.
    pub fn display(self, key: &[u8]) -> String {
        match (self, key.len()) {
            (KeyType::I32, 4) => i32::from_le_bytes(key.try_into().unwrap()).to_string(),
            (KeyType::I64, 8) => i64::from_le_bytes(key.try_into().unwrap()).to_string(),
            (KeyType::Str, _) => format!("\"{}\"", key.escape_ascii()),
            _ => format!("<{} raw bytes: {}>", key.len(), key.escape_ascii()),
        }
    }
}

/// Value dtype of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// float32.
    F32,
    /// float64.
    F64,
    /// IEEE half (2 bytes).
    F16,
    /// bfloat16: the top 16 bits of a float32.
    BF16,
    /// int8.
    I8,
    /// int32.
    I32,
    /// int64.
    I64,
    /// bool, one byte.
    Bool,
    /// Each element stored as a u32 LE length followed by its bytes.
    Str,
}

impl ValueType {
    /// From TensorFlow's `DataType` enum value.
    pub fn from_tf(dtype: i32) -> Result<Self> {
        Ok(match dtype {
            1 => ValueType::F32,
            2 => ValueType::F64,
            19 => ValueType::F16,
            14 => ValueType::BF16,
            6 => ValueType::I8,
            3 => ValueType::I32,
            9 => ValueType::I64,
            10 => ValueType::Bool,
            7 => ValueType::Str,
            d => {
                return Err(Error::invalid(format!(
                    "value_dtype {} is not supported",
                    tf_name(d)
                )))
            }
        })
    }

    /// Bytes per element, or None for strings.
    pub fn elem_size(self) -> Option<usize> {
        match self {
            ValueType::F32 | ValueType::I32 => Some(4),
            ValueType::F64 | ValueType::I64 => Some(8),
            ValueType::F16 | ValueType::BF16 => Some(2),
            ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::Str => None,
        }
    }

    /// The value dtype called `name`: TensorFlow's `DataTypeString` ([`ValueType::tf_name`])
    /// or the Python name (`float32`, `float64`, `float16`).
    pub fn from_name(name: &str) -> Option<ValueType> {
        let name = match name {
            "float32" => "float",
            "float64" => "double",
            "float16" => "half",
            n => n,
        };
        [
            ValueType::F32,
            ValueType::F64,
            ValueType::F16,
            ValueType::BF16,
            ValueType::I8,
            ValueType::I32,
            ValueType::I64,
            ValueType::Bool,
            ValueType::Str,
        ]
        .into_iter()
        .find(|v| v.tf_name() == name)
    }

    /// TensorFlow's `DataTypeString`, which TFRA's HMACCUM takes as its dtype argument.
    pub fn tf_name(self) -> &'static str {
        match self {
            ValueType::F32 => "float",
            ValueType::F64 => "double",
            ValueType::F16 => "half",
            ValueType::BF16 => "bfloat16",
            ValueType::I8 => "int8",
            ValueType::I32 => "int32",
            ValueType::I64 => "int64",
            ValueType::Bool => "bool",
            ValueType::Str => "string",
        }
    }
}

/// How float32 rows are stored in Redis (the `rde_value_storage` config extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// TFRA's layout: the tensor's own bytes.
    Native,
    /// float32 rows stored as bfloat16 (round to nearest even): half the bytes, 8 bits of
    /// mantissa.
    Bf16,
    /// float32 rows stored as IEEE half: half the bytes, 11 bits of mantissa, range ±65504.
    F16,
}

impl Storage {
    /// From the config value `native`, `bfloat16` or `float16`.
    pub fn parse(s: &str) -> Option<Storage> {
        match s {
            "native" => Some(Storage::Native),
            "bfloat16" => Some(Storage::Bf16),
            "float16" => Some(Storage::F16),
            _ => None,
        }
    }

    /// The value type whose arithmetic applies to stored rows, for `vt` tensors.
    pub fn stored_type(self, vt: ValueType) -> ValueType {
        match self {
            Storage::Native => vt,
            Storage::Bf16 => ValueType::BF16,
            Storage::F16 => ValueType::F16,
        }
    }

    /// Appends tensor row `f32_row` (float32 bytes) in stored form.
    pub fn encode(self, f32_row: &[u8], out: &mut Vec<u8>) {
        let floats = f32_row
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        match self {
            Storage::Native => out.extend_from_slice(f32_row),
            Storage::Bf16 => {
                floats.for_each(|x| out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()))
            }
            Storage::F16 => {
                floats.for_each(|x| out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()))
            }
        }
    }

    /// Writes a stored row back as float32 tensor bytes into `out`.
    pub fn decode(self, stored: &[u8], out: &mut [u8]) {
        match self {
            Storage::Native => out.copy_from_slice(stored),
            Storage::Bf16 | Storage::F16 => {
                for (o, s) in out.chunks_exact_mut(4).zip(stored.chunks_exact(2)) {
                    let b = [s[0], s[1]];
                    let x = if self == Storage::Bf16 {
                        half::bf16::from_le_bytes(b).to_f32()
                    } else {
                        half::f16::from_le_bytes(b).to_f32()
                    };
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
}

/// Checks a (key, value) dtype pair against the pairs TFRA registers kernels for.
pub fn check_pair(k: KeyType, v: ValueType) -> Result<()> {
    use ValueType::*;
    let ok = match k {
        KeyType::I32 => matches!(v, F64 | F32 | I32 | BF16),
        KeyType::I64 => matches!(v, F64 | F32 | I32 | I64 | Str | I8 | F16 | BF16),
        KeyType::Str => matches!(v, Bool | F64 | F32 | I32 | I64 | I8 | F16 | BF16),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "key/value dtype pair ({:?}, {}) is not supported by the redis table",
            k,
            v.tf_name()
        )))
    }
}

fn tf_name(d: i32) -> String {
    format!("(TF DataType enum {d})")
}

/// A batch of keys as bytes: fixed-width numbers, or strings with offsets.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    /// `data.len() / width` keys of `width` bytes each.
    Fixed {
        /// Concatenated little-endian keys.
        data: &'a [u8],
        /// Bytes per key.
        width: usize,
    },
    /// Key i is `data[offsets[i]..offsets[i + 1]]`.
    Var {
        /// Concatenated key bytes.
        data: &'a [u8],
        /// `len + 1` boundaries into `data`.
        offsets: &'a [u64],
    },
}

impl<'a> Keys<'a> {
    /// Builds a key batch for `kt`; `offsets` is used for string keys only.
    pub fn new(kt: KeyType, data: &'a [u8], offsets: &'a [u64]) -> Result<Self> {
        match kt.width() {
            Some(width) => {
                if data.len() % width != 0 {
                    return Err(Error::invalid(format!(
                        "key buffer of {} bytes is not a multiple of the key width {width}",
                        data.len()
                    )));
                }
                Ok(Keys::Fixed { data, width })
            }
            None => {
                let ok = !offsets.is_empty()
                    && offsets[0] == 0
                    && offsets.windows(2).all(|w| w[0] <= w[1])
                    && *offsets.last().unwrap() as usize == data.len();
                if !ok {
                    return Err(Error::invalid(
                        "string key offsets do not describe the key buffer",
                    ));
                }
                Ok(Keys::Var { data, offsets })
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        match self {
            Keys::Fixed { data, width } => data.len() / width,
            Keys::Var { offsets, .. } => offsets.len() - 1,
        }
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys `start..end` of this batch.
    pub fn sub(&self, start: usize, end: usize) -> Keys<'a> {
        match *self {
            Keys::Fixed { data, width } => Keys::Fixed {
                data: &data[start * width..end * width],
                width,
            },
            Keys::Var { data, offsets } => Keys::Var {
                data,
                offsets: &offsets[start..=end],
            },
        }
    }

    /// Key `i`'s bytes (its hash field).
    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        match *self {
            Keys::Fixed { data, width } => &data[i * width..(i + 1) * width],
            Keys::Var { data, offsets } => &data[offsets[i] as usize..offsets[i + 1] as usize],
        }
    }
}

/// Rows of values to write: fixed-size rows, or string rows of `dim` elements each.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Row i is `data[i * row..(i + 1) * row]`.
    Fixed {
        /// Concatenated rows.
        data: &'a [u8],
        /// Bytes per row.
        row: usize,
    },
    /// Element j of row i is `data[offsets[i*dim+j]..offsets[i*dim+j+1]]`.
    Str {
        /// Concatenated element bytes.
        data: &'a [u8],
        /// `rows × dim + 1` element boundaries.
        offsets: &'a [u64],
        /// Elements per row.
        dim: usize,
    },
}

impl<'a> Rows<'a> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Fixed { data, row } => data.len() / row.max(&1),
            Rows::Str { offsets, dim, .. } => (offsets.len() - 1) / dim.max(&1),
        }
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..end`.
    pub fn sub(&self, start: usize, end: usize) -> Rows<'a> {
        match *self {
            Rows::Fixed { data, row } => Rows::Fixed {
                data: &data[start * row..end * row],
                row,
            },
            Rows::Str { data, offsets, dim } => Rows::Str {
                data,
                offsets: &offsets[start * dim..=end * dim],
                dim,
            },
        }
    }

    /// Hints the CPU to start loading row `i` (fixed rows; at most its first 1 KB). Rows are
    /// read in plan order, scattered over the tensor, and each one otherwise waits on its own
    /// cache misses.
    #[inline]
    pub fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Rows::Fixed { data, row } = *self {
            let at = i * row;
            let end = (at + row.min(1024)).min(data.len());
            for line in (at..end).step_by(64) {
                // SAFETY: `line` is inside `data`; a prefetch has no architectural effect.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(line).cast());
                }
            }
        }
    }

    /// Encoded byte length of row `i`.
    #[inline]
    pub fn encoded_len(&self, i: usize) -> usize {
        match *self {
            Rows::Fixed { row, .. } => row,
            Rows::Str { offsets, dim, .. } => {
                let (a, b) = (offsets[i * dim] as usize, offsets[(i + 1) * dim] as usize);
                4 * dim + (b - a)
            }
        }
    }

    /// Appends row `i`, encoded as stored in Redis, to `out`.
    #[inline]
    pub fn encode(&self, i: usize, out: &mut Vec<u8>) {
        match *self {
            Rows::Fixed { data, row } => out.extend_from_slice(&data[i * row..(i + 1) * row]),
            Rows::Str { data, offsets, dim } => {
                for j in i * dim..(i + 1) * dim {
                    let e = &data[offsets[j] as usize..offsets[j + 1] as usize];
                    out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    out.extend_from_slice(e);
                }
            }
        }
    }
}

/// Splits a stored string row into its `dim` elements, appending their bytes to `data` and
/// their end offsets to `offsets`. Fails if the bytes are not exactly `dim` elements.
pub fn decode_str_row(
    stored: &[u8],
    dim: usize,
    data: &mut Vec<u8>,
    offsets: &mut Vec<u64>,
) -> std::result::Result<(), String> {
    let mut at = 0usize;
    for j in 0..dim {
        let Some(len_bytes) = stored.get(at..at + 4) else {
            return Err(format!(
                "element {j} of {dim} has no length prefix ({} bytes stored)",
                stored.len()
            ));
        };
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        at += 4;
        let Some(e) = stored.get(at..at + len) else {
            return Err(format!(
                "element {j} claims {len} bytes but only {} remain",
                stored.len() - at
            ));
        };
        data.extend_from_slice(e);
        offsets.push(data.len() as u64);
        at += len;
    }
    if at != stored.len() {
        return Err(format!(
            "{} trailing bytes after {dim} elements",
            stored.len() - at
        ));
    }
    Ok(())
}

/// A key of at most 8 bytes as a little-endian word, zero-padded: numeric keys are compared and
/// hashed as words, which is several times cheaper than as byte slices.
pub(crate) fn le_word(key: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..key.len()].copy_from_slice(key);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_rows_round_trip() {
        let data = b"abcde";
        let offsets = [0u64, 2, 2, 5];
        let rows = Rows::Str {
            data,
            offsets: &offsets,
            dim: 3,
        };
        assert_eq!(rows.len(), 1);
        let mut enc = Vec::new();
        rows.encode(0, &mut enc);
        assert_eq!(enc.len(), rows.encoded_len(0));
        let (mut d, mut o) = (Vec::new(), vec![0u64]);
        decode_str_row(&enc, 3, &mut d, &mut o).unwrap();
        assert_eq!(d, data);
        assert_eq!(o, offsets);
        assert!(decode_str_row(&enc, 2, &mut d, &mut o).is_err());
        assert!(decode_str_row(&enc[..enc.len() - 1], 3, &mut d, &mut o).is_err());
    }

    #[test]
    fn keys_display_and_checks() {
        assert_eq!(KeyType::I64.display(&(-5i64).to_le_bytes()), "-5");
        assert_eq!(KeyType::Str.display(b"a\"b"), "\"a\\\"b\"");
        assert!(Keys::new(KeyType::I64, &[0u8; 12], &[]).is_err());
        assert!(Keys::new(KeyType::Str, b"ab", &[0, 3]).is_err());
        let k = Keys::new(KeyType::Str, b"abc", &[0, 1, 3]).unwrap();
        assert_eq!(k.get(1), b"bc");
    }

    #[test]
    fn compact_storage_round_trips_within_format_precision() {
        let row: Vec<u8> = [1.0f32, -2.5, 0.1, 3.0e4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        for (st, rel) in [(Storage::Bf16, 1.0 / 128.0), (Storage::F16, 1.0 / 1024.0)] {
            let mut enc = Vec::new();
            st.encode(&row, &mut enc);
            assert_eq!(enc.len(), 8);
            let mut back = vec![0u8; 16];
            st.decode(&enc, &mut back);
            for (a, b) in row.chunks(4).zip(back.chunks(4)) {
                let (a, b) = (
                    f32::from_le_bytes(a.try_into().unwrap()),
                    f32::from_le_bytes(b.try_into().unwrap()),
                );
                assert!((a - b).abs() <= a.abs() * rel, "{st:?}: {a} -> {b}");
            }
        }
    }

    #[test]
    fn dtype_pairs_follow_tfra() {
        assert!(check_pair(KeyType::I64, ValueType::Str).is_ok());
        assert!(check_pair(KeyType::I32, ValueType::I8).is_err());
        assert!(check_pair(KeyType::Str, ValueType::Str).is_err());
    }
}
