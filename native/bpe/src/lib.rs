//! A compact byte-pair encoder: the tokens tiktoken's `CoreBPE` gives for an encoding's ranks and
//! split pattern, from one copy of the vocabulary.
//!
//! tiktoken keeps every token three times (an encoder map, a decoder map and a sorted list, each
//! entry its own heap allocation): 41.5 MiB resident for o200k_base, 22.4 MiB for cl100k_base, in
//! every agent pod. Here the tokens' bytes sit end to end in one buffer, found through an
//! open-addressing table of 32-bit entry numbers: about 5 MiB for o200k_base. The split (the same
//! regex engine, `fancy-regex`, as tiktoken) and the merge rule (the lowest-ranked adjacent pair
//! first, ported from tiktoken's `_byte_pair_merge`, MIT licence) are tiktoken's, so the tokens are
//! the same; tests/unit/sidecar/test_bpe.py checks that against tiktoken on every kind of text.
//!
//! The sidecar only counts and never decodes, so there is no decoder and no special tokens.

use std::collections::BinaryHeap;
use std::hash::Hasher;

use fancy_regex::Regex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use rustc_hash::FxHasher;

type Rank = u32;

/// An empty slot of the lookup table.
const EMPTY: u32 = u32::MAX;

/// Pieces at least this long are merged with a heap (tiktoken's `_byte_pair_merge_large`): the
/// plain rule rescans every part after each merge, O(n²) on a long run of spaces or letters.
const LARGE_PIECE: usize = 100;

/// Texts at least this long are split and merged with the GIL released, so other Python threads
/// (the sidecar's event loop) run meanwhile; shorter ones hold it, because giving the GIL back
/// costs a wait of up to the interpreter's switch interval when another thread wants it.
const RELEASE_GIL_BYTES: usize = 16 * 1024;

/// The vocabulary: every token's bytes end to end, its rank, and a table from bytes to entry.
struct Vocab {
    bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is entry `i`'s slice of `bytes`.
    offsets: Vec<u32>,
    ranks: Vec<Rank>,
    /// Entry numbers by hash (linear probing), `EMPTY` where free; a power of two long.
    table: Vec<u32>,
}

fn hash(piece: &[u8]) -> usize {
    let mut hasher = FxHasher::default();
    hasher.write(piece);
    hasher.finish() as usize
}

impl Vocab {
    /// Parses tiktoken's file format: one `<base64 token> <rank>` per line.
    fn parse(data: &[u8]) -> Result<Vocab, String> {
        if data.len() >= u32::MAX as usize {
            return Err(format!(
                "{} bytes is too large for a vocabulary",
                data.len()
            ));
        }
        let mut bytes = Vec::with_capacity(data.len() / 2);
        let mut offsets = vec![0u32];
        let mut ranks = Vec::new();
        for (number, line) in data.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let malformed = || {
                let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
                format!("line {}: malformed {:?}", number + 1, shown)
            };
            let mut fields = line.split(|&b| b == b' ').filter(|field| !field.is_empty());
            let (Some(token), Some(rank), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            decode_base64(token, &mut bytes).ok_or_else(malformed)?;
            let rank = std::str::from_utf8(rank)
                .ok()
                .and_then(|text| text.parse::<Rank>().ok())
                .filter(|&rank| rank != Rank::MAX)
                .ok_or_else(malformed)?;
            offsets.push(bytes.len() as u32);
            ranks.push(rank);
        }
        let size = (ranks.len() * 2).next_power_of_two().max(16);
        let mut vocab = Vocab {
            bytes,
            offsets,
            ranks,
            table: vec![EMPTY; size],
        };
        vocab.bytes.shrink_to_fit();
        vocab.offsets.shrink_to_fit();
        vocab.ranks.shrink_to_fit();
        for entry in 0..vocab.ranks.len() as u32 {
            let piece = vocab.entry(entry);
            let mask = vocab.table.len() - 1;
            let mut slot = hash(piece) & mask;
            loop {
                match vocab.table[slot] {
                    EMPTY => {
                        vocab.table[slot] = entry;
                        break;
                    }
                    other if vocab.entry(other) == piece => {
                        return Err(format!(
                            "token {:?} is listed twice (ranks {} and {})",
                            String::from_utf8_lossy(piece),
                            vocab.ranks[other as usize],
                            vocab.ranks[entry as usize]
                        ));
                    }
                    _ => slot = (slot + 1) & mask,
                }
            }
        }
        Ok(vocab)
    }

    #[inline]
    fn entry(&self, entry: u32) -> &[u8] {
        let entry = entry as usize;
        &self.bytes[self.offsets[entry] as usize..self.offsets[entry + 1] as usize]
    }

    #[inline]
    fn rank(&self, piece: &[u8]) -> Option<Rank> {
        let mask = self.table.len() - 1;
        let mut slot = hash(piece) & mask;
        loop {
            let entry = self.table[slot];
            if entry == EMPTY {
                return None;
            }
            if self.entry(entry) == piece {
                return Some(self.ranks[entry as usize]);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + 4 * (self.offsets.capacity() + self.ranks.capacity() + self.table.capacity())
    }

    /// tiktoken's `_byte_pair_merge`: the piece's parts as `(start, rank of the pair starting
    /// there)`, merging the lowest-ranked adjacent pair until no pair is a token. O(m·n) for m
    /// merges of n bytes; pieces are short, and cache locality beats a heap on them.
    fn merge(&self, piece: &[u8]) -> Vec<(usize, Rank)> {
        let mut parts = Vec::with_capacity(piece.len() + 1);
        let mut min_rank: (Rank, usize) = (Rank::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank(&piece[i..i + 2]).unwrap_or(Rank::MAX);
            if rank < min_rank.0 {
                min_rank = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));

        let get_rank = |parts: &Vec<(usize, Rank)>, i: usize| {
            if i + 3 < parts.len() {
                // parts[i + 1] is not removed yet, hence + 3.
                self.rank(&piece[parts[i].0..parts[i + 3].0])
                    .unwrap_or(Rank::MAX)
            } else {
                Rank::MAX
            }
        };
        while min_rank.0 != Rank::MAX {
            let i = min_rank.1;
            if i > 0 {
                parts[i - 1].1 = get_rank(&parts, i - 1);
            }
            parts[i].1 = get_rank(&parts, i);
            parts.remove(i + 1);
            min_rank = (Rank::MAX, usize::MAX);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min_rank.0 {
                    min_rank = (rank, i);
                }
            }
        }
        parts
    }
}

/// A possible merge for the heap: the lowest rank first, then the leftmost.
#[derive(Eq, PartialEq, Clone, Copy)]
struct Merge {
    start: usize,
    rank: Rank,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.start.cmp(&self.start))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The part starting at a byte: where it ends, where the part after it ends, the rank of the
/// two merged (`Rank::MAX`: not a token), and where the part before it starts.
struct Part {
    prev: usize,
    end: usize,
    next_end: usize,
    next_rank: Rank,
}

impl Vocab {
    /// Where a piece's tokens start, and its length last: the plain merge for short pieces, the
    /// heap for long ones, as tiktoken chooses (`byte_pair_encode`), so the tokens are its own.
    fn boundaries(&self, piece: &[u8]) -> Vec<usize> {
        if piece.len() < LARGE_PIECE {
            return self
                .merge(piece)
                .into_iter()
                .map(|(start, _)| start)
                .collect();
        }
        let parts = self.merge_large(piece);
        let mut bounds = Vec::new();
        let mut start = 0;
        while start < parts.len() {
            bounds.push(start);
            start = parts[start].end;
        }
        bounds.push(piece.len());
        bounds
    }

    /// tiktoken's `_byte_pair_merge_large`: the same merges in O(m log n), with invalidated
    /// merges left on the heap and skipped when they come off it.
    fn merge_large(&self, piece: &[u8]) -> Vec<Part> {
        let n = piece.len();
        let mut parts = Vec::with_capacity(n);
        parts.push(Part {
            prev: usize::MAX,
            end: 1,
            next_end: 2,
            next_rank: Rank::MAX,
        });
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            if let Some(rank) = self.rank(&piece[i..i + 2]) {
                heap.push(Merge { start: i, rank });
                parts[i].next_rank = rank;
            }
            parts.push(Part {
                prev: i,
                end: i + 2,
                next_end: i + 3,
                next_rank: Rank::MAX,
            });
        }
        let potential =
            |parts: &mut Vec<Part>, heap: &mut BinaryHeap<Merge>, start: usize, next_end: usize| {
                parts[start].next_end = next_end;
                parts[start].next_rank = Rank::MAX;
                if next_end <= n {
                    if let Some(rank) = self.rank(&piece[start..next_end]) {
                        heap.push(Merge { start, rank });
                        parts[start].next_rank = rank;
                    }
                }
            };
        while let Some(left) = heap.pop() {
            if left.rank == Rank::MAX {
                break;
            }
            if left.rank != parts[left.start].next_rank {
                continue; // invalidated by an earlier merge
            }
            let left_start = left.start;
            let right_start = parts[left_start].end;
            let right_end = parts[left_start].next_end;
            let right_next_end = parts[right_start].next_end;
            parts[left_start].end = right_end;
            potential(&mut parts, &mut heap, left_start, right_next_end);
            if right_end < parts.len() {
                parts[right_end].prev = left_start;
            }
            if left_start > 0 {
                let prev_start = parts[left_start].prev;
                potential(&mut parts, &mut heap, prev_start, right_end);
            }
            parts[right_start].next_rank = Rank::MAX;
        }
        parts
    }
}

/// Standard base64 with padding, appended to `out`; `None` for anything else.
fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let chunks = text.len() / 4;
    for (index, chunk) in text.chunks_exact(4).enumerate() {
        let mut value = 0u32;
        let mut padding = 0;
        for (position, &c) in chunk.iter().enumerate() {
            let digit = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if position >= 2 && index + 1 == chunks => {
                    padding += 1;
                    0
                }
                _ => return None,
            };
            if padding > 0 && c != b'=' {
                return None;
            }
            value = value << 6 | u32::from(digit);
        }
        out.push((value >> 16) as u8);
        if padding < 2 {
            out.push((value >> 8) as u8);
        }
        if padding < 1 {
            out.push(value as u8);
        }
    }
    Some(())
}

/// One encoding: a name, its vocabulary and its split pattern.
#[pyclass(frozen, module = "a11i_bpe")]
struct Encoding {
    name: String,
    vocab: Vocab,
    regex: Regex,
}

impl Encoding {
    /// Calls `each` with every piece's tokens: its rank when the piece is one token, else the
    /// merged parts.
    fn walk(
        &self,
        text: &str,
        mut each: impl FnMut(Result<Rank, &[usize]>, &[u8]),
    ) -> PyResult<()> {
        for found in self.regex.find_iter(text) {
            let piece = found
                .map_err(|error| {
                    PyValueError::new_err(format!("{}: cannot split the text: {error}", self.name))
                })?
                .as_str()
                .as_bytes();
            if piece.is_empty() {
                continue; // a pattern that matches nothing: no bytes, no tokens
            }
            match self.vocab.rank(piece) {
                Some(rank) => each(Ok(rank), piece),
                None => each(Err(&self.vocab.boundaries(piece)), piece),
            }
        }
        Ok(())
    }

    fn encode(&self, text: &str) -> PyResult<Vec<Rank>> {
        let mut tokens = Vec::with_capacity(text.len() / 3 + 1);
        let mut unknown = None;
        self.walk(text, |found, piece| match found {
            Ok(rank) => tokens.push(rank),
            Err(bounds) => {
                for pair in bounds.windows(2) {
                    match self.vocab.rank(&piece[pair[0]..pair[1]]) {
                        Some(rank) => tokens.push(rank),
                        None => unknown = Some(piece[pair[0]..pair[1]].to_vec()),
                    }
                }
            }
        })?;
        match unknown {
            // Only a vocabulary without all 256 single bytes gets here.
            Some(bytes) => Err(PyValueError::new_err(format!(
                "{}: no token for the bytes {bytes:?}",
                self.name
            ))),
            None => Ok(tokens),
        }
    }

    fn count(&self, text: &str) -> PyResult<usize> {
        let mut count = 0;
        self.walk(text, |found, _| match found {
            Ok(_) => count += 1,
            Err(bounds) => count += bounds.len() - 1,
        })?;
        Ok(count)
    }
}

#[pymethods]
impl Encoding {
    /// `ranks` is the encoding's file as tiktoken reads it (`<base64 token> <rank>` lines),
    /// `pattern` its split regex.
    #[new]
    fn new(name: String, ranks: &[u8], pattern: &str) -> PyResult<Self> {
        let vocab = Vocab::parse(ranks)
            .map_err(|error| PyValueError::new_err(format!("{name}: {error}")))?;
        if vocab.ranks.is_empty() {
            return Err(PyValueError::new_err(format!("{name}: no tokens")));
        }
        let regex = Regex::new(pattern).map_err(|error| {
            PyValueError::new_err(format!("{name}: bad split pattern: {error}"))
        })?;
        Ok(Encoding { name, vocab, regex })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How many tokens the vocabulary holds (no special tokens).
    fn __len__(&self) -> usize {
        self.vocab.ranks.len()
    }

    /// The bytes the vocabulary and its table hold (the regex not counted).
    #[getter]
    fn heap_bytes(&self) -> usize {
        self.vocab.heap_bytes()
    }

    /// The tokens of `text`, special-token text encoded as ordinary text (tiktoken's
    /// `encode_ordinary`).
    fn encode_ordinary(&self, text: &Bound<'_, PyString>) -> PyResult<Vec<Rank>> {
        with_utf8(text, |py, text| {
            if text.len() >= RELEASE_GIL_BYTES {
                py.allow_threads(|| self.encode(text))
            } else {
                self.encode(text)
            }
        })
    }

    /// `len(encode_ordinary(text))` without building the list.
    fn count_ordinary(&self, text: &Bound<'_, PyString>) -> PyResult<usize> {
        with_utf8(text, |py, text| {
            if text.len() >= RELEASE_GIL_BYTES {
                py.allow_threads(|| self.count(text))
            } else {
                self.count(text)
            }
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<a11i_bpe.Encoding {:?}, {} tokens>",
            self.name,
            self.vocab.ranks.len()
        )
    }
}

/// Calls `body` with the text as UTF-8. A Python string may hold lone surrogates (JSON's
/// `"\ud800"` decodes to one), which UTF-8 cannot: as tiktoken does, such a text goes through
/// UTF-16 and back, each lone surrogate becoming U+FFFD and a split pair its character.
fn with_utf8<T>(
    text: &Bound<'_, PyString>,
    body: impl FnOnce(Python<'_>, &str) -> PyResult<T>,
) -> PyResult<T> {
    let py = text.py();
    match text.to_str() {
        Ok(utf8) => body(py, utf8),
        Err(_) => {
            let mended = text
                .call_method1("encode", ("utf-16", "surrogatepass"))?
                .call_method1("decode", ("utf-16", "replace"))?;
            let mended = mended.downcast::<PyString>()?;
            body(py, mended.to_str()?)
        }
    }
}

#[pymodule]
fn a11i_bpe(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Encoding>()?;
    Ok(())
}
