//! Server-side accumulation without a Redis module: a Lua script with TFRA's HMACCUM
//! semantics, atomic per command, applied to the raw little-endian value bytes.
//!
//! ARGV: dtype, exists bytes (one per pair), then field/value pairs; KEYS[1] is the bucket.
//! Per pair, in order: present and exists → stored += delta; absent and not exists → stored =
//! value; otherwise nothing. All new values are computed before any is written, so a stored
//! value of the wrong length fails the command without a partial write.

use crate::codec::ValueType;

/// The script body. Float sums are computed in double and rounded once to the stored type,
/// which equals the IEEE single/double sum; integers wrap like TensorFlow's; bfloat16 rounds
/// the float32 sum to nearest-even, as TensorFlow does.
pub const SCRIPT: &str = r#"
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
        return redis.error_reply('RDE_LEN ' .. i .. ' ' .. #old)
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

/// Whether accum supports values of type `v`.
pub fn supports(v: ValueType) -> bool {
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

/// Reads the script's `RDE_LEN <pair> <stored length>` error: (1-based pair, length).
pub fn parse_len_error(msg: &str) -> Option<(usize, usize)> {
    let rest = msg.split("RDE_LEN ").nth(1)?;
    let mut it = rest.split_whitespace();
    let i: usize = it.next()?.parse().ok()?;
    let len: usize = it
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((i, len))
}
