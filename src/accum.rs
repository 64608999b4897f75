//! Accumulation (TFRA's bp_v2 `HMACCUM` semantics) without a Redis module.
//!
//! Per key, in input order: present and exists → stored += delta; absent and not exists →
//! stored = value; otherwise nothing. The arithmetic runs in the client (TensorFlow's own
//! element types: IEEE float sums, wrapping integers, bfloat16/half rounded to nearest even
//! from the float32 sum), and the result is written with a compare-and-set script that writes
//! a key only if it still holds the bytes the sum was computed from. Keys that lost a race are
//! read again and recomputed, so concurrent accumulations add up exactly, and the server does
//! no per-element work (a per-element Lua loop costs ~15 µs of server CPU per 64-float row).
//! Keys that keep losing races (heavy contention on the same rows) fall back to that loop,
//! which is atomic and so always makes progress.

use crate::codec::ValueType;
use crate::resp::conn::Reply;

/// The compare-and-set script. KEYS[1] is the bucket; ARGV holds triples (field, expected,
/// new) where expected is `\0` for "absent" or `\1` followed by the current bytes. Returns the
/// 1-based triple numbers that were not written because the field had changed.
pub const CAS_SCRIPT: &str = r#"
local h = KEYS[1]
local failed = {}
for i = 1, #ARGV / 3 do
  local f, exp, new = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local cur = redis.call('HGET', h, f)
  local ok
  if string.byte(exp, 1) == 0 then
    ok = (cur == false)
  else
    ok = (cur ~= false and cur == string.sub(exp, 2))
  end
  if ok then
    redis.call('HSET', h, f, new)
  else
    failed[#failed + 1] = i
  end
end
return failed
"#;

/// The fallback for keys that keep losing compare-and-set races: the arithmetic runs inside
/// one script (atomic, so it always makes progress), at ~15 µs of server CPU per 64-float row.
/// ARGV: dtype, exists bytes (one per pair), then field/value pairs; KEYS[1] is the bucket.
/// Float sums are computed in double and rounded once (equal to the IEEE float sum); integers
/// wrap; bfloat16 rounds the float32 sum to nearest even. Returns the number of pairs, or,
/// when a stored value has the wrong length, `{pair, stored length}` before anything is
/// written (see [`script_result`]).
pub const ADD_SCRIPT: &str = r#"
local h = KEYS[1]
local dt = ARGV[1]
local ex = ARGV[2]
local n = (#ARGV - 2) / 2
if #ex ~= n then
  return redis.error_reply('RDE accum: exists has ' .. #ex .. ' bytes for ' .. n .. ' keys')
end
local specs = {float = {'f', 4}, double = {'d', 8}, int32 = {'i4', 4}, int8 = {'b', 1},
               int64 = {'I4i4', 8}, bfloat16 = {'H', 2}}
local spec = specs[dt]
if not spec then
  return redis.error_reply('RDE accum: value type ' .. dt .. ' is not supported')
end
local width = spec[2]
local function wrap(x, m)
  if x >= m / 2 then return x - m elseif x < -m / 2 then return x + m end
  return x
end
local function add(a, b)
  local out = {}
  local m = #a / width
  local s = 0
  while s < m do
    local k = math.min(128, m - s)
    local off = s * width + 1
    local fmt = '<' .. string.rep(spec[1], k)
    local x = {struct.unpack(fmt, a, off)}
    local y = {struct.unpack(fmt, b, off)}
    local r = {}
    if dt == 'int64' then
      for j = 1, 2 * k, 2 do
        local lo = x[j] + y[j]
        local carry = 0
        if lo >= 4294967296 then lo = lo - 4294967296; carry = 1 end
        r[j] = lo
        r[j + 1] = wrap(x[j + 1] + y[j + 1] + carry, 4294967296)
      end
    elseif dt == 'bfloat16' then
      for j = 1, k do
        local fa = struct.unpack('<f', struct.pack('<I4', x[j] * 65536))
        local fb = struct.unpack('<f', struct.pack('<I4', y[j] * 65536))
        local sum = fa + fb
        if sum ~= sum then
          r[j] = 32704
        else
          local bits = struct.unpack('<I4', struct.pack('<f', sum))
          local hi = math.floor(bits / 65536)
          bits = bits + 32767 + (hi % 2)
          r[j] = math.floor(bits / 65536) % 65536
        end
      end
    elseif dt == 'int32' then
      for j = 1, k do r[j] = wrap(x[j] + y[j], 4294967296) end
    elseif dt == 'int8' then
      for j = 1, k do r[j] = wrap(x[j] + y[j], 256) end
    else
      for j = 1, k do r[j] = x[j] + y[j] end
    end
    out[#out + 1] = struct.pack(fmt, unpack(r))
    s = s + k
  end
  return table.concat(out)
end
local pending = {}
local writes = {}
for i = 1, n do
  local f = ARGV[2 * i + 1]
  local d = ARGV[2 * i + 2]
  local e = string.byte(ex, i) ~= 0
  local old = pending[f]
  if old == nil then old = redis.call('HGET', h, f) end
  if old then
    if e then
      if #old ~= #d then
        return {i, #old}
      end
      local v = add(old, d)
      pending[f] = v
      writes[#writes + 1] = f
      writes[#writes + 1] = v
    end
  elseif not e then
    pending[f] = d
    writes[#writes + 1] = f
    writes[#writes + 1] = d
  end
end
local i = 1
while i <= #writes do
  local j = math.min(i + 999, #writes)
  redis.call('HSET', h, unpack(writes, i, j))
  i = j + 1
end
return n
"#;

/// Whether [`ADD_SCRIPT`] handles values of type `v`.
pub fn script_supports(v: ValueType) -> bool {
    matches!(
        v,
        ValueType::F32
            | ValueType::F64
            | ValueType::I32
            | ValueType::I64
            | ValueType::I8
            | ValueType::BF16
    )
}

/// How [`ADD_SCRIPT`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScriptResult {
    /// Every pair was applied.
    Applied,
    /// The stored value of (1-based) pair `pair` has `len` bytes; nothing was written.
    WrongLength {
        /// The pair, counted from 1 in the order they were sent.
        pair: usize,
        /// The stored value's length in bytes.
        len: usize,
    },
}

/// Reads [`ADD_SCRIPT`]'s reply (an integer, or a `{pair, length}` array); `None` for
/// anything else.
pub fn script_result(reply: &Reply) -> Option<ScriptResult> {
    match reply {
        Reply::Int(_) => Some(ScriptResult::Applied),
        Reply::Array(a) => match a.as_slice() {
            [Reply::Int(pair), Reply::Int(len)] => Some(ScriptResult::WrongLength {
                pair: usize::try_from(*pair).ok()?,
                len: usize::try_from(*len).ok()?,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Whether accum supports values of type `v`.
pub fn supports(v: ValueType) -> bool {
    !matches!(v, ValueType::Bool | ValueType::Str)
}

/// float32 → bfloat16 (`half`, as `crate::codec` stores them): round to nearest even, and
/// TensorFlow's rule for NaN, which is always the quiet NaN `0x7fc0` (`half` would keep the
/// sign and payload).
fn f32_to_bf16(x: f32) -> half::bf16 {
    if x.is_nan() {
        return half::bf16::from_bits(0x7fc0);
    }
    half::bf16::from_f32(x)
}

/// `old += delta`, element-wise in `v`'s arithmetic. Both slices hold one row.
pub fn add_row(v: ValueType, old: &mut [u8], delta: &[u8]) {
    macro_rules! each {
        ($n:expr, $f:expr) => {
            for (o, d) in old.chunks_exact_mut($n).zip(delta.chunks_exact($n)) {
                let r = $f(o.try_into().unwrap(), d.try_into().unwrap());
                o.copy_from_slice(&r);
            }
        };
    }
    match v {
        ValueType::F32 => each!(4, |a: [u8; 4], b: [u8; 4]| (f32::from_le_bytes(a)
            + f32::from_le_bytes(b))
        .to_le_bytes()),
        ValueType::F64 => each!(8, |a: [u8; 8], b: [u8; 8]| (f64::from_le_bytes(a)
            + f64::from_le_bytes(b))
        .to_le_bytes()),
        ValueType::I8 => each!(1, |a: [u8; 1], b: [u8; 1]| i8::from_le_bytes(a)
            .wrapping_add(i8::from_le_bytes(b))
            .to_le_bytes()),
        ValueType::I32 => each!(4, |a: [u8; 4], b: [u8; 4]| i32::from_le_bytes(a)
            .wrapping_add(i32::from_le_bytes(b))
            .to_le_bytes()),
        ValueType::I64 => each!(8, |a: [u8; 8], b: [u8; 8]| i64::from_le_bytes(a)
            .wrapping_add(i64::from_le_bytes(b))
            .to_le_bytes()),
        ValueType::BF16 => each!(2, |a: [u8; 2], b: [u8; 2]| {
            let s = half::bf16::from_le_bytes(a).to_f32() + half::bf16::from_le_bytes(b).to_f32();
            f32_to_bf16(s).to_le_bytes()
        }),
        ValueType::F16 => each!(2, |a: [u8; 2], b: [u8; 2]| {
            let s = half::f16::from_le_bytes(a).to_f32() + half::f16::from_le_bytes(b).to_f32();
            half::f16::from_f32(s).to_le_bytes()
        }),
        ValueType::Bool | ValueType::Str => {}
    }
}

/// Applies the occurrences of one key, in order, to its stored value. `stored` is the row in
/// Redis (None if absent); each occurrence is (exists flag, delta-or-value row). Returns the
/// row to write, or None when nothing changes.
pub fn fold<'a>(
    v: ValueType,
    stored: Option<&[u8]>,
    occurrences: impl Iterator<Item = (bool, &'a [u8])>,
) -> Option<Vec<u8>> {
    let mut cur: Option<Vec<u8>> = stored.map(<[u8]>::to_vec);
    let mut changed = false;
    for (exists, d) in occurrences {
        match (&mut cur, exists) {
            (Some(row), true) => {
                add_row(v, row, d);
                changed = true;
            }
            (None, false) => {
                cur = Some(d.to_vec());
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        cur
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reply_says_applied_or_which_pair_has_the_wrong_length() {
        assert_eq!(script_result(&Reply::Int(7)), Some(ScriptResult::Applied));
        let wrong = Reply::Array(vec![Reply::Int(3), Reply::Int(12)]);
        assert_eq!(
            script_result(&wrong),
            Some(ScriptResult::WrongLength { pair: 3, len: 12 })
        );
        for odd in [
            Reply::Nil,
            Reply::Status("OK".into()),
            Reply::Array(vec![Reply::Int(3)]),
            Reply::Array(vec![Reply::Int(-1), Reply::Int(12)]),
            Reply::Array(vec![Reply::Bulk(b"3".to_vec()), Reply::Int(12)]),
        ] {
            assert_eq!(script_result(&odd), None, "{odd:?}");
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn fold_follows_hmaccum_semantics_in_order() {
        let v = ValueType::F32;
        let (one, two) = (f32s(&[1.0]), f32s(&[2.0]));
        // absent: !exists sets, then exists adds.
        assert_eq!(
            fold(v, None, [(false, &one[..]), (true, &two[..])].into_iter()),
            Some(f32s(&[3.0]))
        );
        // absent + exists: dropped.
        assert_eq!(fold(v, None, [(true, &one[..])].into_iter()), None);
        // present + !exists: unchanged.
        assert_eq!(fold(v, Some(&two), [(false, &one[..])].into_iter()), None);
    }

    #[test]
    fn integer_sums_wrap_and_bf16_rounds_to_nearest_even() {
        let mut a = i64::MAX.to_le_bytes().to_vec();
        add_row(ValueType::I64, &mut a, &1i64.to_le_bytes());
        assert_eq!(a, i64::MIN.to_le_bytes());
        let mut b = 127i8.to_le_bytes().to_vec();
        add_row(ValueType::I8, &mut b, &1i8.to_le_bytes());
        assert_eq!(b, (-128i8).to_le_bytes());
        let bits = |x: f32| f32_to_bf16(x).to_bits();
        assert_eq!(bits(1.0), 0x3f80);
        assert_eq!(bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even
        assert_eq!(bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bits(f32::NAN), 0x7fc0);
        assert_eq!(bits(-f32::NAN), 0x7fc0);
        assert_eq!(bits(f32::from_bits(0x7f7f_ffff)), 0x7f80); // rounds up to infinity
                                                               // A NaN sum (inf + -inf is a negative NaN on x86) is TensorFlow's 0x7fc0.
        let mut c = 0x7f80u16.to_le_bytes().to_vec();
        add_row(ValueType::BF16, &mut c, &0xff80u16.to_le_bytes());
        assert_eq!(c, 0x7fc0u16.to_le_bytes());
        // TensorFlow's own formula, over a spread of every bit pattern.
        let tf = |x: f32| {
            let b = x.to_bits();
            if x.is_nan() {
                0x7fc0
            } else {
                ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
            }
        };
        for b in (0..=u32::MAX)
            .step_by(65_521)
            .chain([0x8000, 0x1_8000, 0xffff_ffff])
        {
            let x = f32::from_bits(b);
            assert_eq!(bits(x), tf(x), "{b:#x}");
        }
    }
}
