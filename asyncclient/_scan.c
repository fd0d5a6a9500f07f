/* Finds where each choice's "logprobs" value lies in a completion body, without decoding it.
 *
 * This is the structural half of decode_completion_lazy (asyncclient/_decode.py): the values
 * found here are cut out of the body, msgspec decodes the rest exactly as it decodes any
 * body, and each value is kept as msgspec.Raw, checked when it is read. The scan only has to
 * be exact about structure (where strings, objects and arrays begin and end) on valid JSON;
 * on any other input it must stay in bounds and either give up (return None, and msgspec
 * decodes the whole body) or produce a cut that msgspec then rejects. It gives up on a value
 * whose braces and brackets do not balance separately, so damage inside logprobs cannot move
 * the cut over the fields after them.
 *
 * Logprobs are most of a large body, so skipping a nested value is the hot loop. It works on
 * 64-byte blocks of bitmasks (quotes, backslashes, braces, brackets), in the manner of
 * simdjson: escaped characters and string interiors are found with bit arithmetic, so the
 * cost per block does not depend on how many short strings it holds, and brackets are only
 * counted, not visited one by one, unless this block may close the value. It needs SSE2
 * (every x86-64 CPU); elsewhere logprobs_spans returns None, since a byte-by-byte scan is
 * slower than msgspec skipping the values itself. GCC and Clang builtins are used; a
 * compiler without them fails the (optional) build, and the library works without it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef const unsigned char *cursor;

typedef struct {
    uint64_t quotes;
    uint64_t backslashes;
    uint64_t opens;  /* '{' and '[' */
    uint64_t closes; /* '}' and ']' */
    uint64_t braces; /* bytes with bit 5 set: tells '{' and '}' from '[' and ']' */
} block_masks;

static inline int is_space(unsigned char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline cursor skip_spaces(cursor p, cursor end) {
    while (p < end && is_space(*p)) {
        p++;
    }
    return p;
}

#if defined(__SSE2__)
static inline void masks16(cursor p, int shift, block_masks *m) {
    const __m128i chunk = _mm_loadu_si128((const __m128i *)p);
    /* c | 0x20 maps '[' onto '{' and ']' onto '}', and nothing else onto either. */
    const __m128i folded = _mm_or_si128(chunk, _mm_set1_epi8(0x20));
#define MASK(v) ((uint64_t)(unsigned)_mm_movemask_epi8(v) << shift)
    m->quotes |= MASK(_mm_cmpeq_epi8(chunk, _mm_set1_epi8('"')));
    m->backslashes |= MASK(_mm_cmpeq_epi8(chunk, _mm_set1_epi8('\\')));
    m->opens |= MASK(_mm_cmpeq_epi8(folded, _mm_set1_epi8('{')));
    m->closes |= MASK(_mm_cmpeq_epi8(folded, _mm_set1_epi8('}')));
    m->braces |= MASK(_mm_slli_epi16(chunk, 2)); /* bit 5 of each byte, moved to bit 7 */
#undef MASK
}
#endif

/* The masks of the 64 bytes at p (bit i for p[i]); where fewer than 64 bytes are left, the
 * missing ones count as plain characters. */
static inline void block_masks_at(cursor p, Py_ssize_t available, block_masks *m) {
    m->quotes = m->backslashes = m->opens = m->closes = m->braces = 0;
#if defined(__SSE2__)
    if (available >= 64) {
        masks16(p, 0, m);
        masks16(p + 16, 16, m);
        masks16(p + 32, 32, m);
        masks16(p + 48, 48, m);
        return;
    }
#endif
    const Py_ssize_t count = available < 64 ? available : 64;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char c = p[i];
        const uint64_t bit = (uint64_t)1 << i;
        if (c == '"') {
            m->quotes |= bit;
        } else if (c == '\\') {
            m->backslashes |= bit;
        } else if ((c | 0x20) == '{') {
            m->opens |= bit;
        } else if ((c | 0x20) == '}') {
            m->closes |= bit;
        }
        if (c & 0x20) {
            m->braces |= bit;
        }
    }
}

/* Bit i of the result is the parity of bits 0..i of x: inside a string once quotes are
 * reduced to the unescaped ones (the opening quote counts as inside, the closing one not). */
static inline uint64_t prefix_xor(uint64_t x) {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

/* The characters escaped by a backslash. Backslashes are rare in real bodies, so they are
 * walked one by one; `*carry` says the first character of the block is escaped (a backslash
 * ended the previous one) and is updated for the next block. */
static inline uint64_t escaped_characters(uint64_t backslashes, int *carry) {
    uint64_t escaped = (uint64_t)*carry;
    *carry = 0;
    while (backslashes) {
        const int i = __builtin_ctzll(backslashes);
        backslashes &= backslashes - 1;
        if (escaped & ((uint64_t)1 << i)) {
            continue; /* this backslash is itself escaped */
        }
        if (i == 63) {
            *carry = 1;
        } else {
            escaped |= (uint64_t)1 << (i + 1);
        }
    }
    return escaped;
}

static inline Py_ssize_t count_bits(uint64_t x) {
    return __builtin_popcountll(x);
}

/* start is at the '{' or '[' that opens a value: returns just past its matching bracket, or
 * NULL if the body ends first or the value's braces and brackets do not balance (a damaged
 * value: msgspec reports it, rather than the scan cutting the body in the wrong place). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__)
/* Two builds, picked at load time: with the POPCNT instruction (nearly every x86-64 CPU; the
 * scan runs almost twice as fast), and without it. */
__attribute__((target_clones("popcnt", "default")))
#endif
static cursor skip_container(cursor start, cursor end) {
    const int is_object = *start == '{';
    Py_ssize_t depth = 0;       /* of the value's own kind of bracket */
    Py_ssize_t other_depth = 0; /* of the other kind */
    uint64_t in_string = 0;     /* all ones while a string continues from the last block */
    int escape_carry = 0;
    const Py_ssize_t length = end - start;
    for (Py_ssize_t offset = 0; offset < length; offset += 64) {
        const cursor block = start + offset;
        block_masks m;
        block_masks_at(block, length - offset, &m);
        if (m.backslashes | (uint64_t)escape_carry) {
            m.quotes &= ~escaped_characters(m.backslashes, &escape_carry);
        }
        const uint64_t strings = prefix_xor(m.quotes) ^ in_string;
        in_string = (uint64_t)0 - (strings >> 63);
        const uint64_t kind = is_object ? m.braces : ~m.braces;
        const uint64_t opens = m.opens & kind & ~strings;
        const uint64_t closes = m.closes & kind & ~strings;
        const uint64_t other_opens = m.opens & ~kind & ~strings;
        const uint64_t other_closes = m.closes & ~kind & ~strings;
        const Py_ssize_t closing = count_bits(closes);
        if (closing < depth) {
            /* Fewer closing brackets than open ones: the value cannot end in this block. */
            depth += count_bits(opens) - closing;
            other_depth += count_bits(other_opens) - count_bits(other_closes);
            continue;
        }
        uint64_t brackets = opens | closes;
        while (brackets) {
            const int i = __builtin_ctzll(brackets);
            brackets &= brackets - 1;
            if (opens & ((uint64_t)1 << i)) {
                depth++;
            } else if (--depth == 0) {
                const uint64_t so_far = ((uint64_t)2 << i) - 1; /* bits 0..i */
                other_depth +=
                    count_bits(other_opens & so_far) - count_bits(other_closes & so_far);
                return other_depth == 0 ? block + i + 1 : NULL;
            }
        }
        other_depth += count_bits(other_opens) - count_bits(other_closes);
    }
    return NULL;
}

/* p is just past an opening quote: returns just past the closing one, or NULL. */
static cursor skip_string(cursor p, cursor end) {
    int escape_carry = 0;
    const Py_ssize_t length = end - p;
    for (Py_ssize_t offset = 0; offset < length; offset += 64) {
        block_masks m;
        block_masks_at(p + offset, length - offset, &m);
        if (m.backslashes | (uint64_t)escape_carry) {
            m.quotes &= ~escaped_characters(m.backslashes, &escape_carry);
        }
        if (m.quotes) {
            return p + offset + __builtin_ctzll(m.quotes) + 1;
        }
    }
    return NULL;
}

/* A number, true, false or null: up to the next delimiter. */
static cursor skip_scalar(cursor p, cursor end) {
    const cursor start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_space(*p)) {
        p++;
    }
    return p == start ? NULL : p;
}

static cursor skip_value(cursor p, cursor end) {
    if (p >= end) {
        return NULL;
    }
    if (*p == '"') {
        return skip_string(p + 1, end);
    }
    if (*p == '{' || *p == '[') {
        return skip_container(p, end);
    }
    return skip_scalar(p, end);
}

/* p is at a member's key (or the object's end). Reads the key; returns the cursor at its
 * value, or NULL. A key with an escape in it gives up the scan: "logprob\u0073" is the key
 * logprobs to msgspec, and comparing raw bytes would miss it. */
static cursor read_key(cursor p, cursor end, cursor *key, Py_ssize_t *key_length) {
    if (p >= end || *p != '"') {
        return NULL;
    }
    *key = p + 1;
    p = skip_string(p + 1, end);
    if (p == NULL) {
        return NULL;
    }
    *key_length = (p - 1) - *key;
    if (memchr(*key, '\\', (size_t)*key_length) != NULL) {
        return NULL;
    }
    p = skip_spaces(p, end);
    if (p >= end || *p != ':') {
        return NULL;
    }
    return skip_spaces(p + 1, end);
}

/* After a member or element: past the ',' to the next one (returns it, *more = 1), or past
 * the closing bracket (*more = 0). */
static cursor next_item(cursor p, cursor end, unsigned char closing, int *more) {
    p = skip_spaces(p, end);
    if (p >= end) {
        return NULL;
    }
    if (*p == ',') {
        *more = 1;
        return skip_spaces(p + 1, end);
    }
    if (*p == closing) {
        *more = 0;
        return p + 1;
    }
    return NULL;
}

static inline int key_is(cursor key, Py_ssize_t length, const char *name, Py_ssize_t size) {
    return length == size && memcmp(key, name, (size_t)size) == 0;
}

static int append_span(PyObject *spans, Py_ssize_t position, cursor base, cursor start,
                       cursor stop) {
    PyObject *span = Py_BuildValue("(nnn)", position, (Py_ssize_t)(start - base),
                                   (Py_ssize_t)(stop - base));
    if (span == NULL) {
        return -1;
    }
    const int failed = PyList_Append(spans, span);
    Py_DECREF(span);
    return failed;
}

/* p is at a choice object's '{'. Records its logprobs value; returns past the object. */
static cursor scan_choice(cursor p, cursor end, cursor base, Py_ssize_t position,
                          PyObject *spans, int *error) {
    int found = 0;
    int more = 1;
    p = skip_spaces(p + 1, end);
    if (p < end && *p == '}') {
        return p + 1;
    }
    while (more) {
        cursor key;
        Py_ssize_t key_length;
        p = read_key(p, end, &key, &key_length);
        if (p == NULL) {
            return NULL;
        }
        const cursor value = p;
        p = skip_value(p, end);
        if (p == NULL) {
            return NULL;
        }
        if (key_is(key, key_length, "logprobs", 8)) {
            if (found++) {
                return NULL; /* a repeated key: leave it to msgspec */
            }
            if (append_span(spans, position, base, value, p) < 0) {
                *error = 1;
                return NULL;
            }
        }
        p = next_item(p, end, '}', &more);
        if (p == NULL) {
            return NULL;
        }
    }
    return p;
}

/* p is at the '[' of "choices". */
static cursor scan_choices(cursor p, cursor end, cursor base, PyObject *spans, int *error) {
    int more = 1;
    p = skip_spaces(p + 1, end);
    if (p < end && *p == ']') {
        return p + 1;
    }
    for (Py_ssize_t position = 0; more; position++) {
        if (p < end && *p == '{') {
            p = scan_choice(p, end, base, position, spans, error);
        } else {
            p = skip_value(p, end);
        }
        if (p == NULL) {
            return NULL;
        }
        p = next_item(p, end, ']', &more);
        if (p == NULL) {
            return NULL;
        }
    }
    return p;
}

/* Returns 1 when the whole body was scanned, 0 to give up, -1 on a Python error. */
static int scan_body(cursor base, cursor end, PyObject *spans) {
    int error = 0;
    int seen_choices = 0;
    int more = 1;
    cursor p = skip_spaces(base, end);
    if (p >= end || *p != '{') {
        return 0;
    }
    p = skip_spaces(p + 1, end);
    if (p < end && *p == '}') {
        more = 0;
        p++;
    }
    while (more) {
        cursor key;
        Py_ssize_t key_length;
        p = read_key(p, end, &key, &key_length);
        if (p == NULL) {
            return 0;
        }
        if (key_is(key, key_length, "choices", 7)) {
            if (seen_choices++) {
                return 0; /* a repeated key: leave it to msgspec */
            }
            p = p < end && *p == '[' ? scan_choices(p, end, base, spans, &error)
                                     : skip_value(p, end);
        } else {
            p = skip_value(p, end);
        }
        if (p == NULL) {
            return error ? -1 : 0;
        }
        p = next_item(p, end, '}', &more);
        if (p == NULL) {
            return 0;
        }
    }
    return skip_spaces(p, end) == end;
}

static PyObject *logprobs_spans(PyObject *module, PyObject *body) {
    (void)module;
#if !defined(__SSE2__)
    /* Without vector compares the scan is slower than msgspec skipping the values itself. */
    (void)body;
    Py_RETURN_NONE;
#else
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *spans = PyList_New(0);
    if (spans == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const cursor base = (cursor)view.buf;
    const int scanned = scan_body(base, base + view.len, spans);
    PyBuffer_Release(&view);
    if (scanned == 1) {
        return spans;
    }
    Py_DECREF(spans);
    if (scanned < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
#endif
}

PyDoc_STRVAR(logprobs_spans_doc,
             "logprobs_spans(body, /)\n--\n\n"
             "Where each choice's logprobs value lies in a completion body: a list of\n"
             "(position in choices, start, end) byte offsets, or None when the body is not\n"
             "a JSON object this scan can vouch for (msgspec then decodes it whole).");

static PyMethodDef scan_methods[] = {
    {"logprobs_spans", logprobs_spans, METH_O, logprobs_spans_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot scan_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED}, /* no state: safe without the GIL */
#endif
    {0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    "asyncclient._scan",
    "A structural scan of completion bodies for decode_completion_lazy.",
    0,
    scan_methods,
    scan_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    return PyModuleDef_Init(&scan_module);
}
