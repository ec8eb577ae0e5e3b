//! Restricted decoder for numpy images sent by clients: `.npy` bytes, or a pickle of an
//! ndarray (what `pickle.dumps(cv2.imread(path))` produces).
//!
//! `pickle.loads` on client data is remote code execution, so nothing here ever runs
//! anything. The pickle side is a tiny virtual machine that knows only the opcodes numpy
//! emits for an ndarray, resolves only a fixed list of globals, and "calls" those as data
//! constructors it interprets itself. Every count is bounded and every size is checked
//! against the input length or `max_elements` before anything is allocated.

use std::collections::HashMap;
use std::rc::Rc;

/// A decoded array of u8 pixels, row-major (C order), shape HxW (gray) or HxWxC
/// (C = 1, 3 or 4). Channels are as stored: a cv2 array is BGR(A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumpyImage {
    pub height: usize,
    pub width: usize,
    /// 1 for an (H, W) array.
    pub channels: usize,
    /// `height * width * channels` bytes, C order.
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum NumpyError {
    #[error("not a numpy array: expected .npy bytes (magic \\x93NUMPY) or a pickle of protocol 2 to 5")]
    UnknownFormat,
    #[error("truncated input: unexpected end while reading {0}")]
    Truncated(&'static str),
    #[error("unsupported pickle protocol {0} (2 to 5 are accepted)")]
    PickleProtocol(u8),
    #[error("pickle opcode {name} (0x{code:02x}) at offset {offset} is not allowed")]
    ForbiddenOpcode {
        name: &'static str,
        code: u8,
        offset: usize,
    },
    #[error("pickle global {0} is not allowed")]
    ForbiddenGlobal(String),
    #[error("pickle opcode {0} needs an out-of-band buffer, which cannot be sent over HTTP: pickle with in-band data")]
    OutOfBandBuffer(&'static str),
    #[error("malformed pickle at offset {offset}: {reason}")]
    MalformedPickle { offset: usize, reason: String },
    #[error("pickle too complex: {0}")]
    PickleLimit(String),
    #[error("unsupported .npy format version {0}.{1} (1.0, 2.0 and 3.0 are accepted)")]
    NpyVersion(u8, u8),
    #[error("malformed .npy header: {0}")]
    MalformedNpy(String),
    #[error("unsupported dtype {0} (send uint8 pixels)")]
    UnsupportedDtype(String),
    #[error("unsupported array shape {0}: expected (H, W) or (H, W, C) with C = 1, 3 or 4")]
    UnsupportedShape(String),
    #[error("array shape {shape} has more than the {max} elements allowed")]
    TooLarge { shape: String, max: usize },
    #[error("array data is {actual} bytes but shape {shape} needs {expected}")]
    DataLength {
        shape: String,
        expected: usize,
        actual: usize,
    },
}

type Result<T> = std::result::Result<T, NumpyError>;

/// Accepts either a Python pickle of a numpy ndarray (protocols 2 to 5, in-band data) or
/// `.npy` file bytes (magic `\x93NUMPY`, versions 1.0 to 3.0). Only uint8 arrays of shape
/// (H, W) or (H, W, 1|3|4) with at most `max_elements` elements are accepted.
pub fn decode_numpy(bytes: &[u8], max_elements: usize) -> Result<NumpyImage> {
    if bytes.starts_with(NPY_MAGIC) {
        decode_npy(bytes, max_elements)
    } else if bytes.first() == Some(&PROTO) {
        // Protocols 0 and 1 do not start with PROTO; numpy clients never send them.
        Vm::new(bytes, max_elements).run()?.into_image()
    } else {
        Err(NumpyError::UnknownFormat)
    }
}

// Far above what numpy emits (about 50 opcodes, a dozen stack items, nesting of 2)
// yet small enough that a hostile pickle cannot make the VM hold much.
const MAX_OPCODES: usize = 10_000;
const MAX_STACK: usize = 1_024;
const MAX_MARKS: usize = 64;
const MAX_MEMO: usize = 4_096;
const MAX_NESTING: u32 = 16;
const MAX_GLOBAL_LINE: usize = 256;
// numpy's own reader refuses headers over 10000 bytes by default.
const MAX_NPY_HEADER: usize = 10_000;
// Longest attacker-chosen text copied into an error message.
const MAX_ECHO: usize = 100;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";
const PROTO: u8 = 0x80;

/// Cursor over the input; every read is bounds-checked so truncation is an error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(NumpyError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A 64-bit length; one that does not fit in usize cannot fit in the input either.
    fn len64(&mut self, what: &'static str) -> Result<usize> {
        let n = u64::from_le_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| NumpyError::Truncated(what))
    }

    fn len32(&mut self, what: &'static str) -> Result<usize> {
        usize::try_from(self.u32(what)?).map_err(|_| NumpyError::Truncated(what))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }
}

/// Validated image geometry.
#[derive(Clone, Copy, Debug)]
struct Dims {
    height: usize,
    width: usize,
    channels: usize,
    count: usize,
}

fn format_shape(shape: &[u64]) -> String {
    let shown: Vec<String> = shape.iter().take(8).map(u64::to_string).collect();
    match shape.len() {
        1 => format!("({},)", shown.join("")),
        n if n > 8 => format!("({}, ...)", shown.join(", ")),
        _ => format!("({})", shown.join(", ")),
    }
}

/// Checks an array shape against what the server accepts, before any pixel is copied.
fn check_dims(shape: &[u64], max_elements: usize) -> Result<Dims> {
    let text = format_shape(shape);
    let (h, w, c) = match *shape {
        [h, w] => (h, w, 1),
        [h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c),
        _ => return Err(NumpyError::UnsupportedShape(text)),
    };
    if h == 0 || w == 0 {
        return Err(NumpyError::UnsupportedShape(format!("{text} (empty)")));
    }
    let too_large = || NumpyError::TooLarge {
        shape: text.clone(),
        max: max_elements,
    };
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| too_large());
    let (height, width, channels) = (to_usize(h)?, to_usize(w)?, to_usize(c)?);
    let count = height
        .checked_mul(width)
        .and_then(|n| n.checked_mul(channels))
        .filter(|&n| n <= max_elements)
        .ok_or_else(too_large)?;
    Ok(Dims {
        height,
        width,
        channels,
        count,
    })
}

fn check_data_len(dims: &Dims, shape: &[u64], actual: usize) -> Result<()> {
    if actual != dims.count {
        return Err(NumpyError::DataLength {
            shape: format_shape(shape),
            expected: dims.count,
            actual,
        });
    }
    Ok(())
}

/// Copies the pixels out in C order; `data.len() == dims.count` was checked by the caller.
fn to_image(dims: Dims, fortran: bool, data: &[u8]) -> NumpyImage {
    let data = if fortran {
        // Fortran order: element (y, x, c) lives at y + H * (x + W * c).
        let (h, w, c) = (dims.height, dims.width, dims.channels);
        let mut out = Vec::with_capacity(dims.count);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out.push(data[y + h * (x + w * ch)]);
                }
            }
        }
        out
    } else {
        data.to_vec()
    };
    NumpyImage {
        height: dims.height,
        width: dims.width,
        channels: dims.channels,
        data,
    }
}

fn check_dtype(name: &str) -> Result<()> {
    // Byte order is meaningless for one-byte elements, so every prefix is fine.
    match name {
        "u1" | "|u1" | "<u1" | ">u1" | "=u1" | "B" | "|B" | "uint8" => Ok(()),
        other => Err(NumpyError::UnsupportedDtype(echo(other))),
    }
}

/// Attacker-chosen text made safe to put in an error message (and a log line).
fn echo(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_ECHO)
        .map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if text.chars().count() > MAX_ECHO {
        out.push_str("...");
    }
    out
}

// ---------------------------------------------------------------------------------------
// .npy

fn decode_npy(bytes: &[u8], max_elements: usize) -> Result<NumpyImage> {
    let mut r = Reader { buf: bytes, pos: 0 };
    r.take(NPY_MAGIC.len(), ".npy magic")?;
    let major = r.u8(".npy version")?;
    let minor = r.u8(".npy version")?;
    let header_len = match (major, minor) {
        (1, 0) => usize::from(r.u16(".npy header length")?),
        (2, 0) | (3, 0) => r.len32(".npy header length")?,
        _ => return Err(NumpyError::NpyVersion(major, minor)),
    };
    if header_len > MAX_NPY_HEADER {
        return Err(NumpyError::MalformedNpy(format!(
            "header of {header_len} bytes is longer than {MAX_NPY_HEADER}"
        )));
    }
    let header = r.take(header_len, ".npy header")?;
    // Versions 1 and 2 are latin1, 3 is UTF-8; a valid uint8 header is plain ASCII in all.
    let header = std::str::from_utf8(header)
        .ok()
        .filter(|h| h.is_ascii())
        .ok_or_else(|| NumpyError::MalformedNpy("header is not ASCII".into()))?;
    let header = NpyHeader::parse(header)?;
    check_dtype(header.descr)?;
    let dims = check_dims(&header.shape, max_elements)?;
    let data = r.rest();
    check_data_len(&dims, &header.shape, data.len())?;
    Ok(to_image(dims, header.fortran_order, data))
}

/// The header dict, e.g. `{'descr': '|u1', 'fortran_order': False, 'shape': (480, 640, 3), }`,
/// read by a strict parser for exactly that literal form (numpy evaluates it with
/// `ast.literal_eval`; we do not evaluate anything).
struct NpyHeader<'h> {
    descr: &'h str,
    fortran_order: bool,
    shape: Vec<u64>,
}

impl<'h> NpyHeader<'h> {
    fn parse(text: &'h str) -> Result<Self> {
        let mut p = HeaderParser { text, pos: 0 };
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        p.expect(b'{')?;
        loop {
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.expect(b':')?;
            match key {
                "descr" if descr.is_none() => {
                    if p.peek() == Some(b'[') {
                        return Err(NumpyError::UnsupportedDtype("structured (list descr)".into()));
                    }
                    descr = Some(p.string()?);
                }
                "fortran_order" if fortran_order.is_none() => fortran_order = Some(p.boolean()?),
                "shape" if shape.is_none() => shape = Some(p.tuple()?),
                other => {
                    return Err(NumpyError::MalformedNpy(format!(
                        "unexpected or repeated key '{}'",
                        echo(other)
                    )))
                }
            }
            if !p.eat(b',') {
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.pos != text.len() {
            return Err(p.error("trailing characters after the header dict"));
        }
        let missing = |key: &str| NumpyError::MalformedNpy(format!("missing key '{key}'"));
        Ok(Self {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

struct HeaderParser<'h> {
    text: &'h str,
    pos: usize,
}

impl<'h> HeaderParser<'h> {
    fn error(&self, what: &str) -> NumpyError {
        NumpyError::MalformedNpy(format!("{what} at column {}", self.pos))
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek_raw(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek_raw(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek_raw()
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", char::from(c))))
        }
    }

    /// A quoted string without escapes (none of the valid keys or values need one).
    fn string(&mut self) -> Result<&'h str> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        let start = self.pos + 1;
        let len = self.text.as_bytes()[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or_else(|| self.error("unterminated string"))?;
        let s = &self.text[start..start + len];
        if s.contains('\\') {
            return Err(self.error("escapes in strings are not supported"));
        }
        self.pos = start + len + 1;
        Ok(s)
    }

    fn word(&mut self) -> &'h str {
        self.skip_ws();
        let start = self.pos;
        while matches!(self.peek_raw(), Some(c) if c.is_ascii_alphanumeric()) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn boolean(&mut self) -> Result<bool> {
        match self.word() {
            "True" => Ok(true),
            "False" => Ok(false),
            _ => Err(self.error("expected True or False")),
        }
    }

    fn tuple(&mut self) -> Result<Vec<u64>> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(items);
            }
            let word = self.word();
            // Python 2 wrote longs as `480L`.
            let digits = word.strip_suffix('L').unwrap_or(word);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(self.error("expected a non-negative integer in shape"));
            }
            items.push(digits.parse().map_err(|_| self.error("shape dimension out of range"))?);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(items);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pickle

/// The only globals a pickle may name. Each is interpreted by `Vm::call`, never looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Callable {
    /// numpy.(_)core.multiarray._reconstruct(ndarray, (0,), b'b') -> empty array awaiting BUILD.
    Reconstruct,
    /// numpy.ndarray: only valid as _reconstruct's first argument.
    NdarrayType,
    /// numpy.dtype(name, align, copy).
    Dtype,
    /// numpy.(_)core.numeric._frombuffer(buffer, dtype, shape, order), protocol 5.
    FromBuffer,
    /// _codecs.encode(str, 'latin1'): how protocol 2 spells bytes.
    CodecsEncode,
}

fn resolve_global(module: &str, name: &str) -> Result<Callable> {
    // copyreg._reconstructor is not needed: numpy's ndarray and dtype define __reduce__.
    match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Ok(Callable::Reconstruct),
        ("numpy", "ndarray") => Ok(Callable::NdarrayType),
        ("numpy", "dtype") => Ok(Callable::Dtype),
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Ok(Callable::FromBuffer),
        ("_codecs", "encode") => Ok(Callable::CodecsEncode),
        _ => Err(NumpyError::ForbiddenGlobal(echo(&format!("{module}.{name}")))),
    }
}

/// Bytes held by the VM: borrowed from the input, or produced by `_codecs.encode`.
#[derive(Clone, Debug)]
enum Buf<'a> {
    Input(&'a [u8]),
    Owned(Rc<[u8]>),
}

impl Buf<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Buf::Input(b) => b,
            Buf::Owned(b) => b,
        }
    }
}

/// A fully described uint8 array whose size has been checked.
#[derive(Clone, Debug)]
struct Pixels<'a> {
    dims: Dims,
    fortran: bool,
    data: Buf<'a>,
}

impl Pixels<'_> {
    fn into_image(self) -> Result<NumpyImage> {
        Ok(to_image(self.dims, self.fortran, self.data.as_slice()))
    }
}

#[derive(Clone, Debug)]
struct Tuple<'a> {
    items: Vec<Value<'a>>,
    /// Nesting depth, bounded so that dropping a value cannot recurse deeply.
    depth: u32,
}

/// Values are immutable and cheap to clone (memo and BINGET share them).
#[derive(Clone, Debug)]
enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    Str(&'a str),
    Bytes(Buf<'a>),
    Tuple(Rc<Tuple<'a>>),
    Global(Callable),
    /// Any value numpy never uses as an argument (a float); kept only as a placeholder.
    Opaque(&'static str),
    /// numpy.dtype('u1'): the only dtype that can be built.
    DtypeU8,
    /// Result of _reconstruct before BUILD gives it shape and data.
    EmptyArray,
    Array(Pixels<'a>),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::Global(_) => "global",
            Value::Opaque(kind) => kind,
            Value::DtypeU8 => "dtype",
            Value::EmptyArray | Value::Array(_) => "ndarray",
        }
    }

    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(t) => t.depth,
            _ => 0,
        }
    }
}

struct Vm<'a> {
    r: Reader<'a>,
    stack: Vec<Value<'a>>,
    /// Stacks saved by MARK, as in CPython's unpickler.
    metastack: Vec<Vec<Value<'a>>>,
    memo: HashMap<u32, Value<'a>>,
    ops: usize,
    /// Offset of the opcode being run, for error messages.
    op_offset: usize,
    max_elements: usize,
    /// Bytes `_codecs.encode` may still allocate: the input length in total, so a memoized
    /// string encoded many times cannot multiply memory use.
    alloc_left: usize,
}

impl<'a> Vm<'a> {
    fn new(bytes: &'a [u8], max_elements: usize) -> Self {
        Self {
            r: Reader { buf: bytes, pos: 0 },
            stack: Vec::new(),
            metastack: Vec::new(),
            memo: HashMap::new(),
            ops: 0,
            op_offset: 0,
            max_elements,
            alloc_left: bytes.len(),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> NumpyError {
        NumpyError::MalformedPickle {
            offset: self.op_offset,
            reason: reason.into(),
        }
    }

    fn push(&mut self, v: Value<'a>) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(NumpyError::PickleLimit(format!("more than {MAX_STACK} stack items")));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value<'a>> {
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    fn top(&self) -> Result<&Value<'a>> {
        self.stack.last().ok_or_else(|| self.bad("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value<'a>>> {
        let outer = self.metastack.pop().ok_or_else(|| self.bad("no MARK to close"))?;
        Ok(std::mem::replace(&mut self.stack, outer))
    }

    fn tuple(&self, items: Vec<Value<'a>>) -> Result<Value<'a>> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_NESTING {
            return Err(NumpyError::PickleLimit(format!(
                "tuples nested deeper than {MAX_NESTING}"
            )));
        }
        Ok(Value::Tuple(Rc::new(Tuple { items, depth })))
    }

    fn push_tuple(&mut self, n: usize) -> Result<()> {
        if n > self.stack.len() {
            return Err(self.bad("stack underflow"));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        let t = self.tuple(items)?;
        self.push(t)
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(NumpyError::PickleLimit(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.bad(format!("memo entry {index} does not exist")))?;
        self.push(v)
    }

    fn str(&self, raw: &'a [u8]) -> Result<Value<'a>> {
        std::str::from_utf8(raw)
            .map(Value::Str)
            .map_err(|_| self.bad("string is not valid UTF-8"))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.r.buf[self.r.pos..];
        let window = &rest[..rest.len().min(MAX_GLOBAL_LINE + 1)];
        let Some(len) = window.iter().position(|&c| c == b'\n') else {
            return Err(if window.len() > MAX_GLOBAL_LINE {
                self.bad("GLOBAL name too long")
            } else {
                NumpyError::Truncated("GLOBAL name")
            });
        };
        let raw = self.r.take(len + 1, "GLOBAL name")?;
        std::str::from_utf8(&raw[..len]).map_err(|_| self.bad("GLOBAL name is not UTF-8"))
    }

    fn run(mut self) -> Result<Pixels<'a>> {
        loop {
            if self.ops >= MAX_OPCODES {
                return Err(NumpyError::PickleLimit(format!("more than {MAX_OPCODES} opcodes")));
            }
            self.ops += 1;
            self.op_offset = self.r.pos;
            let code = self.r.u8("a pickle opcode (no STOP)")?;
            match code {
                PROTO => {
                    let proto = self.r.u8("PROTO")?;
                    if !(2..=5).contains(&proto) {
                        return Err(NumpyError::PickleProtocol(proto));
                    }
                }
                // FRAME only announces how many bytes follow; we read the flat stream.
                0x95 => {
                    let n = self.r.len64("FRAME")?;
                    if n > self.r.remaining() {
                        return Err(NumpyError::Truncated("FRAME"));
                    }
                }
                b'.' => return self.stop(),
                b'(' => {
                    if self.metastack.len() >= MAX_MARKS {
                        return Err(NumpyError::PickleLimit(format!("more than {MAX_MARKS} open MARKs")));
                    }
                    let inner = std::mem::take(&mut self.stack);
                    self.metastack.push(inner);
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.r.array("BININT")?);
                    self.push(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.r.u8("BININT1")?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = self.r.u16("BININT2")?;
                    self.push(Value::Int(v.into()))?;
                }
                0x8a => {
                    let n = usize::from(self.r.u8("LONG1")?);
                    let raw = self.r.take(n, "LONG1")?;
                    let v = self.long1(raw)?;
                    self.push(Value::Int(v))?;
                }
                b'G' => {
                    self.r.take(8, "BINFLOAT")?;
                    self.push(Value::Opaque("float"))?;
                }
                0x8c => {
                    let n = usize::from(self.r.u8("SHORT_BINUNICODE")?);
                    let raw = self.r.take(n, "SHORT_BINUNICODE")?;
                    let v = self.str(raw)?;
                    self.push(v)?;
                }
                b'X' => {
                    let n = self.r.len32("BINUNICODE")?;
                    let raw = self.r.take(n, "BINUNICODE")?;
                    let v = self.str(raw)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = self.r.len64("BINUNICODE8")?;
                    let raw = self.r.take(n, "BINUNICODE8")?;
                    let v = self.str(raw)?;
                    self.push(v)?;
                }
                b'C' => {
                    let n = usize::from(self.r.u8("SHORT_BINBYTES")?);
                    let raw = self.r.take(n, "SHORT_BINBYTES")?;
                    self.push(Value::Bytes(Buf::Input(raw)))?;
                }
                b'B' => {
                    let n = self.r.len32("BINBYTES")?;
                    let raw = self.r.take(n, "BINBYTES")?;
                    self.push(Value::Bytes(Buf::Input(raw)))?;
                }
                0x8e => {
                    let n = self.r.len64("BINBYTES8")?;
                    let raw = self.r.take(n, "BINBYTES8")?;
                    self.push(Value::Bytes(Buf::Input(raw)))?;
                }
                // In-band bytearray: how protocol 5 carries a writable array's data.
                0x96 => {
                    let n = self.r.len64("BYTEARRAY8")?;
                    let raw = self.r.take(n, "BYTEARRAY8")?;
                    self.push(Value::Bytes(Buf::Input(raw)))?;
                }
                0x97 | 0x98 => return Err(NumpyError::OutOfBandBuffer(opcode_name(code))),
                b')' => self.push_tuple(0)?,
                0x85 => self.push_tuple(1)?,
                0x86 => self.push_tuple(2)?,
                0x87 => self.push_tuple(3)?,
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.tuple(items)?;
                    self.push(t)?;
                }
                b'q' => {
                    let i = self.r.u8("BINPUT")?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.r.u32("LONG_BINPUT")?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.bad("memo full"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.r.u8("BINGET")?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = self.r.u32("LONG_BINGET")?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(module, name)?;
                    self.push(Value::Global(g))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.bad("STACK_GLOBAL needs two strings"));
                    };
                    let g = resolve_global(module, name)?;
                    self.push(Value::Global(g))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let Value::Global(func) = func else {
                        return Err(self.bad(format!("REDUCE on a {}, not a global", func.kind())));
                    };
                    let Value::Tuple(args) = args else {
                        return Err(self.bad("REDUCE arguments are not a tuple"));
                    };
                    let v = self.call(func, &args.items)?;
                    self.push(v)?;
                }
                b'b' => self.build()?,
                other => {
                    return Err(NumpyError::ForbiddenOpcode {
                        name: opcode_name(other),
                        code: other,
                        offset: self.op_offset,
                    })
                }
            }
        }
    }

    /// LONG1: little-endian two's complement of up to 8 bytes (numpy uses it for big ints).
    fn long1(&self, raw: &[u8]) -> Result<i64> {
        if raw.len() > 8 {
            return Err(self.bad("integer wider than 64 bits"));
        }
        let mut bytes = [0u8; 8];
        bytes[..raw.len()].copy_from_slice(raw);
        if raw.last().is_some_and(|&b| b & 0x80 != 0) {
            for b in &mut bytes[raw.len()..] {
                *b = 0xff;
            }
        }
        Ok(i64::from_le_bytes(bytes))
    }

    fn stop(mut self) -> Result<Pixels<'a>> {
        let v = self.pop()?;
        if self.r.remaining() != 0 {
            return Err(self.bad("trailing bytes after STOP"));
        }
        match v {
            Value::Array(pixels) => Ok(pixels),
            Value::EmptyArray => Err(self.bad("ndarray was never given its state (no BUILD)")),
            other => Err(self.bad(format!("pickle holds a {}, not an ndarray", other.kind()))),
        }
    }

    /// "Calls" an allowed global by interpreting its arguments as data.
    fn call(&mut self, func: Callable, args: &[Value<'a>]) -> Result<Value<'a>> {
        match (func, args) {
            (
                Callable::Reconstruct,
                [Value::Global(Callable::NdarrayType), Value::Tuple(_), Value::Bytes(_) | Value::Str(_)],
            ) => Ok(Value::EmptyArray),
            (Callable::Reconstruct, _) => Err(self.bad("unexpected _reconstruct arguments")),
            (Callable::NdarrayType, _) => Err(self.bad("numpy.ndarray cannot be called directly")),
            (Callable::Dtype, [Value::Str(name), flags @ ..])
                if flags.len() <= 2 && flags.iter().all(|f| matches!(f, Value::Bool(_) | Value::Int(_))) =>
            {
                check_dtype(name)?;
                Ok(Value::DtypeU8)
            }
            (Callable::Dtype, _) => Err(self.bad("unexpected numpy.dtype arguments")),
            (Callable::FromBuffer, [Value::Bytes(data), Value::DtypeU8, Value::Tuple(shape), Value::Str(order)]) => {
                let fortran = match *order {
                    "C" => false,
                    "F" => true,
                    _ => return Err(self.bad("_frombuffer order must be 'C' or 'F'")),
                };
                let pixels = self.pixels(&shape.items, fortran, data.clone())?;
                Ok(Value::Array(pixels))
            }
            (Callable::FromBuffer, _) => Err(self.bad("unexpected _frombuffer arguments")),
            (Callable::CodecsEncode, [Value::Str(text), Value::Str("latin1" | "latin-1")]) => self.latin1(text),
            (Callable::CodecsEncode, _) => Err(self.bad("_codecs.encode is only supported as encode(str, 'latin1')")),
        }
    }

    /// `_codecs.encode(text, 'latin1')`: each code point below 256 becomes one byte.
    fn latin1(&mut self, text: &str) -> Result<Value<'a>> {
        // The output is never longer than the UTF-8 input, which is part of the pickle.
        if text.len() > self.alloc_left {
            return Err(NumpyError::PickleLimit(
                "_codecs.encode allocations exceed the input size".into(),
            ));
        }
        self.alloc_left -= text.len();
        let bytes = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| self.bad("character outside latin1 in _codecs.encode"))?;
        Ok(Value::Bytes(Buf::Owned(bytes.into())))
    }

    fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        match self.top()? {
            Value::DtypeU8 => self.check_dtype_state(&state),
            Value::EmptyArray => {
                let pixels = self.array_state(&state)?;
                if let Some(top) = self.stack.last_mut() {
                    *top = Value::Array(pixels);
                }
                Ok(())
            }
            other => Err(self.bad(format!("BUILD on a {}", other.kind()))),
        }
    }

    /// numpy dtype state: (3, '|', None, None, None, -1, -1, 0), plus metadata in version 4.
    /// A dtype's identity came from its constructor; the state may only confirm it is a
    /// plain scalar type (no subarray, no fields).
    fn check_dtype_state(&self, state: &Value<'a>) -> Result<()> {
        let ok = match state {
            Value::Tuple(t) => matches!(
                t.items.as_slice(),
                [Value::Int(3 | 4), Value::Str("|" | "<" | ">" | "="), Value::None, Value::None, Value::None, rest @ ..]
                    if rest.len() == 3 || rest.len() == 4
            ),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(NumpyError::UnsupportedDtype(
                "with subarray, fields or unknown state".into(),
            ))
        }
    }

    /// ndarray state: ([version,] shape, dtype, is_fortran, rawdata).
    fn array_state(&self, state: &Value<'a>) -> Result<Pixels<'a>> {
        let Value::Tuple(t) = state else {
            return Err(self.bad("ndarray state is not a tuple"));
        };
        let fields = match t.items.as_slice() {
            [Value::Int(0 | 1), rest @ ..] if rest.len() == 4 => rest,
            items if items.len() == 4 => items,
            _ => return Err(self.bad("ndarray state has an unknown layout")),
        };
        match fields {
            [Value::Tuple(shape), Value::DtypeU8, fortran, Value::Bytes(data)] => {
                let fortran = match fortran {
                    Value::Bool(b) => *b,
                    Value::Int(i @ (0 | 1)) => *i == 1,
                    _ => return Err(self.bad("ndarray is_fortran flag is not a bool")),
                };
                self.pixels(&shape.items, fortran, data.clone())
            }
            [_, Value::DtypeU8, _, _] => Err(self.bad("ndarray state has no shape or raw bytes")),
            _ => Err(self.bad("ndarray state has no dtype")),
        }
    }

    fn pixels(&self, shape: &[Value<'a>], fortran: bool, data: Buf<'a>) -> Result<Pixels<'a>> {
        let shape = shape
            .iter()
            .map(|d| match d {
                Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| self.bad("shape is not a tuple of non-negative ints"))?;
        let dims = check_dims(&shape, self.max_elements)?;
        check_data_len(&dims, &shape, data.as_slice().len())?;
        Ok(Pixels { dims, fortran, data })
    }
}

/// Names every pickle opcode, so a rejection says which one it was.
fn opcode_name(code: u8) -> &'static str {
    match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by host/tests/data/numpy/gen.py (see there) with numpy 1.26.4 and 2.4.6.
    const FIXTURES_NUMPY1: &[u8] = include_bytes!("../../tests/data/numpy/fixtures_numpy1.bin");
    const FIXTURES_NUMPY2: &[u8] = include_bytes!("../../tests/data/numpy/fixtures_numpy2.bin");
    const MAX: usize = 4096 * 4096 * 4;

    /// Splits gen.py's container: repeated `name\n<decimal length>\n<bytes>`.
    fn records(mut blob: &[u8]) -> Vec<(String, &[u8])> {
        let mut out = Vec::new();
        while !blob.is_empty() {
            let mut line = || {
                let end = blob.iter().position(|&c| c == b'\n').unwrap();
                let text = std::str::from_utf8(&blob[..end]).unwrap().to_string();
                blob = &blob[end + 1..];
                text
            };
            let name = line();
            let len: usize = line().parse().unwrap();
            out.push((name, &blob[..len]));
            blob = &blob[len..];
        }
        out
    }

    fn all_records() -> Vec<(String, &'static [u8])> {
        let mut out = Vec::new();
        for (tag, blob) in [("np1", FIXTURES_NUMPY1), ("np2", FIXTURES_NUMPY2)] {
            for (name, bytes) in records(blob) {
                out.push((format!("{tag}/{name}"), bytes));
            }
        }
        out
    }

    /// gen.py's pixel values: (i * 7 + 3) % 256 over the C-order index.
    fn expected(height: usize, width: usize, channels: usize) -> NumpyImage {
        let n = height * width * channels;
        NumpyImage {
            height,
            width,
            channels,
            data: (0..n).map(|i| ((i * 7 + 3) % 256) as u8).collect(),
        }
    }

    fn err(bytes: &[u8]) -> String {
        match decode_numpy(bytes, MAX) {
            Ok(img) => panic!("expected an error, got {}x{}x{}", img.height, img.width, img.channels),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn fixtures_decode_or_fail_as_expected() {
        let all = all_records();
        assert_eq!(all.len(), 2 * 78, "gen.py output changed");
        let mut decoded = 0;
        for (name, bytes) in &all {
            let base = name.split('/').nth(1).unwrap().split('.').next().unwrap();
            let good = match base.split('_').next().unwrap() {
                "rgb" => Some(expected(3, 4, 3)),
                "gray" => Some(expected(2, 5, 1)),
                "rgba" => Some(expected(2, 2, 4)),
                "hwc1" => Some(expected(2, 3, 1)),
                "tall" => Some(expected(257, 2, 1)),
                _ => None,
            };
            let result = decode_numpy(bytes, MAX);
            if let Some(want) = good {
                assert_eq!(result.unwrap_or_else(|e| panic!("{name}: {e}")), want, "{name}");
                decoded += 1;
                continue;
            }
            let msg = result.err().unwrap_or_else(|| panic!("{name} decoded")).to_string();
            let want = match base {
                "evil_os_system" => "pickle global posix.system is not allowed",
                // Protocol 2 writes Python 2 module names.
                "evil_eval" if name.ends_with(".p2") => "pickle global __builtin__.eval is not allowed",
                "evil_eval" => "pickle global builtins.eval is not allowed",
                "evil_popen" if name.ends_with(".p2") => "pickle global commands.Popen is not allowed",
                "evil_popen" => "pickle global subprocess.Popen is not allowed",
                "huge_shape" => "shape (100000, 100000, 3) has more than",
                "short_data" => "array data is 5 bytes but shape (2, 2, 3) needs 12",
                "float64" => "unsupported dtype f8 (send uint8 pixels)",
                "int16" => "unsupported dtype i2 (send uint8 pixels)",
                "objects" => "unsupported dtype O8 (send uint8 pixels)",
                "batch4d" => "unsupported array shape (1, 2, 2, 3)",
                "twochan" => "unsupported array shape (2, 2, 2)",
                "vector" => "unsupported array shape (6,)",
                other => panic!("no expectation for fixture {other}"),
            };
            let want = if name.ends_with(".npy") && base == "float64" {
                "unsupported dtype <f8"
            } else if name.ends_with(".npy") && base == "int16" {
                "unsupported dtype <i2"
            } else {
                want
            };
            assert!(msg.contains(want), "{name}: {msg}");
        }
        // Per numpy version: 9 arrays x 4 protocols, 8 contiguous ones as .npy 1.0, and .npy
        // 2.0 and 3.0.
        assert_eq!(decoded, 2 * (36 + 8 + 2));
    }

    #[test]
    fn max_elements_is_enforced() {
        for (name, bytes) in all_records() {
            if name.ends_with("/rgb.p2") || name.ends_with("/rgb.p5") || name.ends_with("/rgb.npy") {
                assert!(decode_numpy(bytes, 36).is_ok(), "{name}");
                let e = decode_numpy(bytes, 35).unwrap_err();
                assert!(matches!(e, NumpyError::TooLarge { .. }), "{name}: {e}");
            }
        }
    }

    #[test]
    fn every_truncation_fails() {
        for (name, bytes) in all_records() {
            for cut in 0..bytes.len() {
                assert!(decode_numpy(&bytes[..cut], MAX).is_err(), "{name} cut at {cut}");
            }
        }
    }

    /// Small deterministic PRNG so the fuzz-style tests need no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn assert_consistent(result: Result<NumpyImage>, max: usize) {
        if let Ok(img) = result {
            assert_eq!(img.data.len(), img.height * img.width * img.channels);
            assert!(img.data.len() <= max);
            assert!(matches!(img.channels, 1 | 3 | 4));
        }
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for (_, bytes) in all_records() {
            for _ in 0..300 {
                let mut m = bytes.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(m.len());
                    match rng.below(4) {
                        0 => m[i] = rng.next() as u8,
                        1 => m[i] ^= 1 << rng.below(8),
                        2 => {
                            m.remove(i);
                        }
                        _ => m.insert(i, rng.next() as u8),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                assert_consistent(decode_numpy(&m, 100), 100);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(12345);
        let prefixes: [&[u8]; 4] = [b"", b"\x80\x04", b"\x80\x02", b"\x93NUMPY\x01\x00"];
        for round in 0..4000 {
            let mut m = prefixes[round % prefixes.len()].to_vec();
            for _ in 0..rng.below(300) {
                m.push(rng.next() as u8);
            }
            assert_consistent(decode_numpy(&m, 1000), 1000);
        }
    }

    fn flood(prefix: &[u8], unit: &[u8], times: usize) -> Vec<u8> {
        let mut out = prefix.to_vec();
        for _ in 0..times {
            out.extend_from_slice(unit);
        }
        out.push(b'.');
        out
    }

    #[test]
    fn floods_hit_limits() {
        let cases = [
            (flood(b"\x80\x02", b"(", 100_000), "open MARKs"),
            (flood(b"\x80\x02)", b"\x85", 100_000), "nested deeper"),
            (flood(b"\x80\x02", b"N", 100_000), "stack items"),
            (flood(b"\x80\x02N", b"q\x00", 100_000), "opcodes"),
            (flood(b"\x80\x02N", b"\x94", 100_000), "memo entries"),
            (flood(b"\x80\x04", b"\x95\0\0\0\0\0\0\0\0", 100_000), "opcodes"),
        ];
        for (bytes, want) in cases {
            let msg = err(&bytes);
            assert!(msg.starts_with("pickle too complex") && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn protocol2_reencoding_cannot_amplify_memory() {
        // A 40 KB string encoded again and again through the memo.
        let text = "x".repeat(40_000);
        let mut p = b"\x80\x02c_codecs\nencode\nq\x00X".to_vec();
        p.extend_from_slice(&(text.len() as u32).to_le_bytes());
        p.extend_from_slice(text.as_bytes());
        p.extend_from_slice(b"q\x01X\x06\x00\x00\x00latin1q\x02");
        // Each round pushes one more encoded copy; 500 copies would be 20 MB.
        for _ in 0..500 {
            p.extend_from_slice(b"h\x00h\x01h\x02\x86R");
        }
        p.push(b'.');
        assert!(err(&p).contains("exceed the input size"));
    }

    #[test]
    fn handcrafted_pickles_are_rejected() {
        let cases: [(&[u8], &str); 16] = [
            (b"cos\nsystem\n(S'echo pwned'\ntR.", "not a numpy array"),
            (b"\x80\x06N.", "unsupported pickle protocol 6"),
            (
                b"\x80\x02cposix\nsystem\nq\x00.",
                "pickle global posix.system is not allowed",
            ),
            (b"\x80\x02cnumpy\nload\n.", "pickle global numpy.load is not allowed"),
            (
                b"\x80\x02cbuiltins\ngetattr\n.",
                "pickle global builtins.getattr is not allowed",
            ),
            (
                b"\x80\x02ccopyreg\n_reconstructor\n.",
                "pickle global copyreg._reconstructor",
            ),
            (b"\x80\x05\x97.", "NEXT_BUFFER needs an out-of-band buffer"),
            (b"\x80\x05\x98.", "READONLY_BUFFER needs an out-of-band buffer"),
            (
                b"\x80\x02)\x81.",
                "pickle opcode NEWOBJ (0x81) at offset 3 is not allowed",
            ),
            (b"\x80\x02(iposix\nsystem\n.", "pickle opcode INST (0x69)"),
            (b"\x80\x02]q\x00.", "pickle opcode EMPTY_LIST (0x5d)"),
            (
                b"\x80\x02cnumpy\nndarray\n)R.",
                "numpy.ndarray cannot be called directly",
            ),
            (
                b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00bX\x05\x00\x00\x00utf-8\x86R.",
                "_codecs.encode is only supported as encode(str, 'latin1')",
            ),
            (b"\x80\x02h\x07.", "memo entry 7 does not exist"),
            (b"\x80\x02N.junk", "trailing bytes after STOP"),
            (b"\x80\x02K\x01.", "pickle holds a int, not an ndarray"),
        ];
        for (bytes, want) in cases {
            let msg = err(bytes);
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        }
        let long_name = [b"\x80\x02c".as_slice(), &[b'a'; 1000], b"\n"].concat();
        assert!(err(&long_name).contains("GLOBAL name too long"));
        assert!(err(b"\x80\x02cos\nsys").contains("truncated"));
    }

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_headers() {
        let ok = npy("{\"descr\":'|u1' ,'shape':(2L,1,),'fortran_order':True}  \n", &[1, 2]);
        let img = decode_numpy(&ok, MAX).unwrap();
        assert_eq!((img.height, img.width, img.channels, img.data), (2, 1, 1, vec![1, 2]));

        let huge = "{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 3), }";
        let overflow = "{'descr': '|u1', 'fortran_order': False, 'shape': (18446744073709551615, 2), }";
        let cases = [
            (npy(huge, b"tiny"), "has more than"),
            (npy(overflow, b""), "has more than"),
            (
                npy(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999, 2), }",
                    b"",
                ),
                "out of range",
            ),
            (
                npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }", &[0; 8]),
                "unsupported dtype <f8",
            ),
            (
                npy(
                    "{'descr': [('a', '|u1')], 'fortran_order': False, 'shape': (1, 1), }",
                    &[0],
                ),
                "unsupported dtype structured",
            ),
            (
                npy(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1), 'x': 1}",
                    &[0],
                ),
                "unexpected or repeated key 'x'",
            ),
            (
                npy(
                    "{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1, 1)}",
                    &[0],
                ),
                "unexpected or repeated key 'descr'",
            ),
            (
                npy("{'descr': '|u1', 'shape': (1, 1)}", &[0]),
                "missing key 'fortran_order'",
            ),
            (
                npy(
                    "{'descr': __import__('os').system('x'), 'fortran_order': False, 'shape': (1, 1)}",
                    &[0],
                ),
                "expected a quoted string",
            ),
            (
                npy("{'descr': '|u1', 'fortran_order': 1, 'shape': (1, 1)}", &[0]),
                "expected True or False",
            ),
            (
                npy("{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 1)}", &[0]),
                "non-negative integer",
            ),
            (
                npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1)} x", &[0]),
                "trailing characters",
            ),
            (
                npy("{'descr': '|u1', 'fortran_order': False, 'shape': (0, 5)}", &[]),
                "(0, 5) (empty)",
            ),
            (
                npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2)}", &[0, 1, 2]),
                "array data is 3 bytes but shape (1, 2) needs 2",
            ),
            (
                [b"\x93NUMPY\x04\x00".as_slice(), b"\x00\x00"].concat(),
                "unsupported .npy format version 4.0",
            ),
            (
                [b"\x93NUMPY\x02\x00".as_slice(), &u32::MAX.to_le_bytes()].concat(),
                "header of 4294967295 bytes",
            ),
        ];
        for (bytes, want) in cases {
            let msg = err(&bytes);
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        }
    }
}
