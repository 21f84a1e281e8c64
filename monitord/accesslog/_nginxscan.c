/*
 * monitord.accesslog._nginxscan: the nginx `combined` fast path in C (see nginx.py).
 *
 * `scan` reads a block of lines of the usual shape in one pass, without the interpreter lock:
 * the time, status, size and request time as numbers, and the text fields (address, user,
 * method, path, service, user agent, X-Forwarded-For) as codes into the distinct byte ranges of the block, so
 * that Python builds each distinct string once. Every line it takes must read exactly as the
 * exact path (nginx_exact.py) reads it; a line of any other shape is marked for the exact path,
 * which stays the reference. The rules mirror nginx_exact's patterns:
 *
 *   head     ^(\S+) - (.*)\[TIME\] "       (TIME the 26 bytes before '] "', not after the first
 *                                          '[': the user, right-trimmed of spaces, may hold '['
 *                                          and spaces; "-" or "" is null)
 *   status   ^ (\d{3}) (\d+|-)            (after the request's closing quote; a size of 19 digits
 *                                          or more goes to the exact path, which rejects it)
 *   request  ^([A-Z]{3,12}) (\S+)         (path: the target before '?' or '#', once the
 *                                          target's escapes are undone as schema.unescape
 *                                          does: see `unescape`)
 *   service  ^/svc/([^/?#]+)               (the default service pattern, on the path)
 *   rt       ^ (\d+(?:\.\d+)?)             (after the user agent's closing quote)
 *   xff      the 8th quoted piece, whole   (to the end of the line when unclosed; which address
 *                                          is the client's is decided after, see forwarded.py)
 *
 * \s is RE2's: tab, newline, form feed, carriage return and space.
 *
 * `line_offsets` finds the newlines of a block (lines.split_lines) with memchr, without the
 * block-sized mask that numpy needs to find them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { IP, USER, METHOD, PATH, SERVICE, AGENT, XFF, NTEXT };

/* Where text values are: a position below `size` is in the block's data, one from `size` on
 * in `decoded` (request targets whose nginx escapes were undone), at position - size. */
typedef struct {
    const uint8_t *data;
    int32_t size;
    uint8_t *decoded; /* allocated on the first escaped target; holds up to size bytes */
    int32_t used;
    int failed; /* out of memory */
    int32_t lines;
    struct targets *targets; /* the escaped request targets read so far (allocated on the first) */
} source_t;

static inline const uint8_t *at(const source_t *src, int32_t pos) {
    return pos < src->size ? src->data + pos : src->decoded + (pos - src->size);
}

/* -- interning byte ranges ------------------------------------------------------------------ */

typedef struct {
    uint32_t hash;
    int32_t start, len, code; /* code -1: an empty slot */
} slot_t;

typedef struct {
    slot_t *slots;
    uint32_t mask;
    int32_t count;
    int32_t *starts, *ends; /* the distinct ranges, in order of first use */
} table_t;

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The last 1 to 7 bytes of a range as a word, without reading outside it. */
static inline uint64_t load_tail(const uint8_t *p, size_t len) {
    uint32_t lo, hi;
    if (len >= 4) {
        memcpy(&lo, p, 4);
        memcpy(&hi, p + len - 4, 4);
        return lo | ((uint64_t)hi << 32);
    }
    return p[0] | ((uint64_t)p[len / 2] << 8) | ((uint64_t)p[len - 1] << 16);
}

static uint32_t hash_bytes(const uint8_t *p, size_t len) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ len;
    const uint8_t *end = p + len;
    for (; end - p >= 8; p += 8) {
        h = (h ^ load64(p)) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    if (end > p) h = (h ^ load_tail(p, end - p)) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

/* memcmp(a, b, len) == 0 inline: the ranges are short, and a call costs more than comparing. */
static inline int same_bytes(const uint8_t *a, const uint8_t *b, size_t len) {
    for (; len >= 8; a += 8, b += 8, len -= 8)
        if (load64(a) != load64(b)) return 0;
    return len == 0 || load_tail(a, len) == load_tail(b, len);
}

/* Most fields have a few distinct values a block: tables start small and double when half
 * full. Returns 0 when out of memory. */
static int grow(table_t *t) {
    uint32_t capacity = t->slots ? 2 * (t->mask + 1) : 256;
    slot_t *slots = malloc(sizeof(slot_t) * capacity);
    if (!slots) return 0;
    for (uint32_t i = 0; i < capacity; i++) slots[i].code = -1;
    if (t->slots) {
        for (uint32_t i = 0; i <= t->mask; i++) {
            slot_t s = t->slots[i];
            if (s.code < 0) continue;
            uint32_t j = s.hash & (capacity - 1);
            while (slots[j].code >= 0) j = (j + 1) & (capacity - 1);
            slots[j] = s;
        }
        free(t->slots);
    }
    t->slots = slots;
    t->mask = capacity - 1;
    return 1;
}

/* The code of the range [start, end) of `src`; -2 when out of memory. */
static int32_t intern(table_t *t, const source_t *src, int32_t start, int32_t end) {
    if ((uint32_t)t->count >= (t->mask + 1) / 2 && !grow(t)) return -2;
    int32_t len = end - start;
    const uint8_t *p = at(src, start);
    uint32_t h = hash_bytes(p, (size_t)len);
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        slot_t *s = &t->slots[i];
        if (s->code < 0) {
            *s = (slot_t){h, start, len, t->count};
            t->starts[t->count] = start;
            t->ends[t->count] = end;
            return t->count++;
        }
        if (s->hash == h && s->len == len && same_bytes(at(src, s->start), p, len))
            return s->code;
    }
}

/* What an escaped request target came to: its path and service as ranges (start -1: none), or
 * `exact` when the exact path must read the line. The first line holding a target reads it;
 * every later one with the same bytes takes this. */
typedef struct {
    int32_t path[2], service[2];
    int exact;
} reading_t;

struct targets {
    table_t table; /* the distinct escaped targets, as ranges of the block's data */
    reading_t *read; /* per target code */
};

/* -- bytes ---------------------------------------------------------------------------------- */

static inline int is_space(uint8_t c) { /* RE2's \s */
    return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* What ends or marks a request target: RE2's \s ends it, '?' and '#' end its path, and a
 * backslash is an nginx escape. */
enum { TARGET_END = 1, PATH_END = 2, ESCAPE = 4 };
static const uint8_t TARGET[256] = {
    ['\t'] = TARGET_END, ['\n'] = TARGET_END, ['\f'] = TARGET_END, ['\r'] = TARGET_END,
    [' '] = TARGET_END,   ['?'] = PATH_END,     ['#'] = PATH_END,     ['\\'] = ESCAPE,
};

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as Arrow checks. */
static int valid_utf8(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        int n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (end - p <= n) return 0;
        for (int k = 1; k <= n; k++) {
            if ((p[k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        p += n + 1;
    }
    return 1;
}

static int has_high_byte(const uint8_t *p, const uint8_t *end) {
    for (; end - p >= 8; p += 8)
        if (load64(p) & 0x8080808080808080ull) return 1;
    for (; p < end; p++)
        if (*p & 0x80) return 1;
    return 0;
}

/* -- nginx escapes -------------------------------------------------------------------------- */

static inline int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Undo the escapes of [p, end) into `out` as schema.unescape does, left to right: `\xXX` (hex
 * of either case) is that byte, `\"` and `\\` are the character after the backslash, and any
 * other backslash stays. Returns the length written (never more than end - p). */
static int32_t unescape(const uint8_t *p, const uint8_t *end, uint8_t *out) {
    uint8_t *o = out;
    while (p < end) {
        if (*p != '\\' || end - p < 2) {
            *o++ = *p++;
            continue;
        }
        int hi, lo;
        if (p[1] == 'x' && end - p >= 4 && (hi = hex_value(p[2])) >= 0 &&
            (lo = hex_value(p[3])) >= 0) {
            *o++ = (uint8_t)(hi << 4 | lo);
            p += 4;
        } else if (p[1] == '"' || p[1] == '\\') {
            *o++ = p[1];
            p += 2;
        } else {
            *o++ = *p++;
        }
    }
    return (int32_t)(o - out);
}

/* -- $time_local ---------------------------------------------------------------------------- */

static const char MONTHS[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const int DAYS_IN_MONTH[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

static inline int two(const uint8_t *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* schema.EARLIEST and schema.LATEST: 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z. */
#define EARLIEST 0
#define LATEST 253402300799LL

/* Epoch seconds of "dd/Mon/yyyy:HH:MM:SS +zzzz" of the canonical form with a real date within
 * [EARLIEST, LATEST]; 0 if it is not (the exact path then decides, and rejects a time out of
 * that range). */
static int parse_time(const uint8_t *t, int64_t *out) {
    static const int digits[] = {0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25};
    for (size_t k = 0; k < sizeof digits / sizeof digits[0]; k++)
        if (!is_digit(t[digits[k]])) return 0;
    if (t[2] != '/' || t[6] != '/' || t[11] != ':' || t[14] != ':' || t[17] != ':' ||
        t[20] != ' ' || (t[21] != '+' && t[21] != '-'))
        return 0;
    int month = 0;
    for (int k = 0; k < 12 && !month; k++)
        if (t[3] == MONTHS[k][0] && t[4] == MONTHS[k][1] && t[5] == MONTHS[k][2]) month = k + 1;
    if (!month) return 0;
    int day = two(t), hour = two(t + 12), minute = two(t + 15), second = two(t + 18);
    int year = two(t + 7) * 100 + two(t + 9), tz_hours = two(t + 22), tz_minutes = two(t + 24);
    int leap = (year % 4 == 0) && (year % 100 != 0 || year % 400 == 0);
    int month_days = DAYS_IN_MONTH[month] + (leap && month == 2);
    if (day < 1 || day > month_days || year < 1000 || hour > 23 || minute > 59 || second > 59 ||
        tz_hours > 23 || tz_minutes > 59)
        return 0;
    int64_t offset = (t[21] == '+' ? 1 : -1) * (int64_t)(tz_hours * 3600 + tz_minutes * 60);
    int64_t ts = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    ts -= offset;
    if (ts < EARLIEST || ts > LATEST) return 0;
    *out = ts;
    return 1;
}

/* -- one line ------------------------------------------------------------------------------- */

typedef struct {
    int64_t ts, bytes; /* bytes: -1 for "-" */
    double ms;         /* NaN when the line has no request time */
    int32_t status;
    int32_t text[NTEXT][2]; /* [start, end) of each text field; start -1 for null */
} line_t;

/* $request_time from `p` (the byte after the user agent's closing quote): milliseconds, or
 * NaN. Returns 0 for a number too long to read here. */
static int request_time(const uint8_t *p, const uint8_t *end, double *ms) {
    *ms = NAN;
    if (p >= end || *p != ' ') return 1;
    const uint8_t *s = ++p;
    while (p < end && is_digit(*p)) p++;
    if (p == s) return 1;
    if (p + 1 < end && *p == '.' && is_digit(p[1])) {
        p++;
        while (p < end && is_digit(*p)) p++;
    }
    /* Up to 15 digits, the value is exact as an integer over a power of ten, and the division
     * rounds it correctly: strtod's result, without its cost. */
    static const double POWERS[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                    1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    int64_t mantissa = 0;
    int count = 0, decimals = 0;
    for (const uint8_t *d = s; d < p && count <= 15; d++) {
        if (*d == '.') {
            decimals = (int)(p - d - 1);
            continue;
        }
        mantissa = mantissa * 10 + (*d - '0');
        count++;
    }
    if (count <= 15) {
        *ms = (double)mantissa / POWERS[decimals] * 1000.0;
        return 1;
    }
    char number[64];
    if (p - s >= (ptrdiff_t)sizeof number) return 0;
    memcpy(number, s, p - s);
    number[p - s] = 0;
    *ms = strtod(number, NULL) * 1000.0;
    return 1;
}

static inline void set(line_t *out, int field, int32_t start, int32_t end) {
    out->text[field][0] = start;
    out->text[field][1] = end;
}

static int unescape_path(source_t *src, const uint8_t *b, int32_t t, int32_t te, line_t *out);

/* How the escaped target [t, te) was read before in this block (path[0] -2: not yet, to fill),
 * or NULL when out of memory (then it is read unremembered). */
static reading_t *remember(source_t *src, int32_t t, int32_t te) {
    struct targets *ts = src->targets;
    if (!ts) {
        ts = src->targets = calloc(1, sizeof *ts);
        if (!ts) return NULL;
        ts->table.starts = malloc(sizeof(int32_t) * src->lines);
        ts->table.ends = malloc(sizeof(int32_t) * src->lines);
        ts->read = malloc(sizeof(reading_t) * src->lines);
    }
    if (!ts->table.starts || !ts->table.ends || !ts->read) return NULL;
    int32_t before = ts->table.count;
    int32_t code = intern(&ts->table, src, t, te);
    if (code < 0) return NULL;
    if (ts->table.count > before) ts->read[code] = (reading_t){{-2, -2}, {-1, -1}, 0};
    return &ts->read[code];
}

static void forget_targets(source_t *src) {
    if (!src->targets) return;
    free(src->targets->table.slots);
    free(src->targets->table.starts);
    free(src->targets->table.ends);
    free(src->targets->read);
    free(src->targets);
}

/* The path (and service) of the request target [t, te) of `b`, which holds a backslash: the
 * target unescaped into src->decoded. 0 when the exact path must read it: the unescaped bytes
 * are not UTF-8 (it tries GB18030), or hold a newline (its query strip, `[?#].*$`, stops at
 * one), or there is no room. */
static int escaped_path(source_t *src, const uint8_t *b, int32_t t, int32_t te, line_t *out) {
    reading_t *seen = remember(src, t, te);
    if (seen && seen->path[0] != -2) {
        set(out, PATH, seen->path[0], seen->path[1]);
        set(out, SERVICE, seen->service[0], seen->service[1]);
        return 1;
    }
    if (seen && seen->exact) return 0;
    if (!unescape_path(src, b, t, te, out)) {
        if (seen) seen->exact = 1;
        return 0;
    }
    if (seen) {
        memcpy(seen->path, out->text[PATH], sizeof seen->path);
        memcpy(seen->service, out->text[SERVICE], sizeof seen->service);
    }
    return 1;
}

/* `escaped_path`'s reading of a target not seen before in the block. */
static int unescape_path(source_t *src, const uint8_t *b, int32_t t, int32_t te, line_t *out) {
    if (!src->decoded) {
        src->decoded = malloc((size_t)src->size + 1);
        if (!src->decoded) {
            src->failed = 1;
            return 0;
        }
    }
    if (te - t > src->size - src->used || (int64_t)src->size + src->used + (te - t) > INT32_MAX)
        return 0;
    uint8_t *d = src->decoded + src->used;
    int32_t len = unescape(b + t, b + te, d);
    if (memchr(d, '\n', len) != NULL || (has_high_byte(d, d + len) && !valid_utf8(d, d + len)))
        return 0;
    int32_t pe = 0;
    while (pe < len && d[pe] != '?' && d[pe] != '#') pe++;
    int32_t base = src->size + src->used;
    src->used += len;
    set(out, PATH, base, base + pe);
    if (pe > 5 && memcmp(d, "/svc/", 5) == 0) {
        int32_t ve = 5;
        while (ve < pe && d[ve] != '/') ve++;
        if (ve > 5) set(out, SERVICE, base + 5, base + ve);
    }
    return 1;
}

/* The end of the request target of `b` that starts at `t` (at most `q1`, the request's closing
 * quote); `pe` the first raw '?' or '#' in it, `esc` its first backslash (-1: none). Kept out of
 * `scan_line`, where the loop's position lived on the stack: 22 % of the scan's time went on
 * the store and reload of that one counter. */
static __attribute__((noinline)) int32_t target_end(const uint8_t *b, int32_t t, int32_t q1,
                                                    int32_t *pe, int32_t *esc) {
    const uint8_t *p = b + t, *end = b + q1;
    int32_t first_end = -1, first_escape = -1;
    for (; p < end; p++) {
        uint8_t kind = TARGET[*p];
        if (kind == 0) continue;
        if (kind == TARGET_END) break;
        if (kind == ESCAPE) {
            /* An escaped '?' is a path's '?' too: it ends the path once unescaped. */
            if (first_escape < 0) first_escape = (int32_t)(p - b);
        } else if (first_end < 0) {
            first_end = (int32_t)(p - b);
        }
    }
    *pe = first_end;
    *esc = first_escape;
    return (int32_t)(p - b);
}

/* Whether the escapes of the request target [t, te) of `b` (the first at `esc`) leave its path
 * as it is written, so that it need not be unescaped: they all follow the raw '?' or '#' that
 * ends the path (`pe`), the path is ASCII (the exact path decodes the whole unescaped target:
 * UTF-8, else GB18030, which read ASCII alike), and none may be a newline (`\x0a`, which would
 * stop the exact path's query strip, `[?#].*$`). */
static int query_escapes_only(const uint8_t *b, int32_t t, int32_t pe, int32_t esc, int32_t te) {
    if (pe < 0 || esc < pe || has_high_byte(b + t, b + pe)) return 0;
    /* memmem: escapes below \x10 are rare, and a memchr per backslash cost more than the rest
     * of the check in a query of escaped UTF-8. */
    for (const uint8_t *p = b + esc, *end = b + te; (p = memmem(p, end - p, "\\x0", 3)) != NULL;
         p++)
        if (end - p >= 4 && (p[3] == 'a' || p[3] == 'A')) return 0;
    return 1;
}

/* The first of RE2's \s in [a, end) of `b`, or `end`: 16 bytes at a time where SSE2 is there
 * (an address is mostly within the first 16), else a byte at a time. */
static inline int32_t space_at(const uint8_t *b, int32_t a, int32_t end) {
#ifdef __SSE2__
    for (; end - a >= 16; a += 16) {
        __m128i c = _mm_loadu_si128((const __m128i *)(b + a));
        __m128i space = _mm_cmpeq_epi8(c, _mm_set1_epi8(' '));
        space = _mm_or_si128(space, _mm_cmpeq_epi8(c, _mm_set1_epi8('\t')));
        space = _mm_or_si128(space, _mm_cmpeq_epi8(c, _mm_set1_epi8('\n')));
        space = _mm_or_si128(space, _mm_cmpeq_epi8(c, _mm_set1_epi8('\f')));
        space = _mm_or_si128(space, _mm_cmpeq_epi8(c, _mm_set1_epi8('\r')));
        unsigned found = (unsigned)_mm_movemask_epi8(space);
        if (found) return a + __builtin_ctz(found);
    }
#endif
    while (a < end && !is_space(b[a])) a++;
    return a;
}

/* Note the quote at `at` of the line starting at `s`: 0 when a backslash escapes it (nginx's
 * escape=json, for the exact path's full pattern). */
static inline int note_quote(const uint8_t *b, int32_t s, int32_t at, int32_t q[8], int *nq) {
    if (at > s && b[at - 1] == '\\') return 0;
    if (*nq < 8) q[*nq] = at;
    (*nq)++;
    return 1;
}

/* The quotes of the line [s, e) of `b`: how many (-1 when one is escaped), the first 8 in `q`,
 * and in `high` whether a byte is above 127. One pass, 16 bytes at a time where SSE2 is there
 * (every x86-64): a memchr call per quote and a second pass for the high bytes took a third of
 * the scan's time. */
static int find_quotes(const uint8_t *b, int32_t s, int32_t e, int32_t q[8], int *high) {
    int nq = 0, any_high = 0;
    int32_t i = s;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    for (; e - i >= 16; i += 16) {
        __m128i chunk = _mm_loadu_si128((const __m128i *)(b + i));
        any_high |= _mm_movemask_epi8(chunk);
        unsigned quotes = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(chunk, quote));
        for (; quotes; quotes &= quotes - 1)
            if (!note_quote(b, s, i + __builtin_ctz(quotes), q, &nq)) return -1;
    }
#endif
    for (; i < e; i++) {
        any_high |= b[i] & 0x80;
        if (b[i] == '"' && !note_quote(b, s, i, q, &nq)) return -1;
    }
    *high = any_high != 0;
    return nq;
}

/* Read one line [s, e) of `b`; 0 when it is not of the usual shape. `last_time` is the time
 * field of the line read before (NULL for none): consecutive lines mostly share their second. */
static int scan_line(const uint8_t *b, int32_t s, int32_t e, line_t *out,
                     const uint8_t **last_time, source_t *src) {
    /* A byte order mark (a file's first line, from an editor or a log shipper) is no part of
     * the address; the exact path's patterns skip it alike. */
    if (e - s >= 3 && b[s] == 0xEF && b[s + 1] == 0xBB && b[s + 2] == 0xBF) s += 3;
    int32_t q[8];
    int high;
    int nq = find_quotes(b, s, e, q, &high);
    if (nq < 6) return 0; /* also an escaped quote (-1) */
    if (high && !valid_utf8(b + s, b + e)) return 0;

    /* The head: "addr - user [time] " before the first quote. */
    int32_t bracket = q[0] - 29;
    if (bracket < s || b[bracket] != '[' || b[q[0] - 2] != ']' || b[q[0] - 1] != ' ') return 0;
    const uint8_t *time = b + bracket + 1;
    if (!(*last_time && same_bytes(*last_time, time, 26))) {
        if (!parse_time(time, &out->ts)) return 0;
        *last_time = time;
    }
    int32_t a = space_at(b, s, bracket);
    if (a == s || a + 3 > bracket || b[a] != ' ' || b[a + 1] != '-' || b[a + 2] != ' ') return 0;
    set(out, IP, s, a);
    int32_t u = a + 3, ue = bracket;
    while (ue > u && b[ue - 1] == ' ') ue--;
    if (ue == u || (ue - u == 1 && b[u] == '-'))
        set(out, USER, -1, -1);
    else
        set(out, USER, u, ue);

    /* Status and size after the request. */
    int32_t p = q[1] + 1;
    if (q[2] - p < 6 || b[p] != ' ' || !is_digit(b[p + 1]) || !is_digit(b[p + 2]) ||
        !is_digit(b[p + 3]) || b[p + 4] != ' ')
        return 0;
    out->status = (b[p + 1] - '0') * 100 + (b[p + 2] - '0') * 10 + (b[p + 3] - '0');
    p += 5;
    if (is_digit(b[p])) {
        int64_t v = 0;
        for (int32_t d = p; p < q[2] && is_digit(b[p]); p++) {
            if (p - d == 18) return 0; /* 19 digits or more: the exact path rejects the line */
            v = v * 10 + (b[p] - '0');
        }
        out->bytes = v;
    } else if (b[p] == '-') {
        out->bytes = -1;
    } else {
        return 0;
    }

    /* The request line: method, path and service; null if it is not "METHOD target". */
    set(out, METHOD, -1, -1);
    set(out, PATH, -1, -1);
    set(out, SERVICE, -1, -1);
    int32_t r = q[0] + 1, m = r;
    while (m < q[1] && m - r < 13 && b[m] >= 'A' && b[m] <= 'Z') m++;
    if (m - r >= 3 && m - r <= 12 && m < q[1] && b[m] == ' ' && m + 1 < q[1] &&
        !is_space(b[m + 1])) {
        int32_t t = m + 1, pe, esc;
        int32_t te = target_end(b, t, q[1], &pe, &esc);
        int escaped = esc >= 0 && !query_escapes_only(b, t, pe, esc, te);
        if (pe < 0) pe = te;
        set(out, METHOD, r, m);
        if (escaped) {
            if (!escaped_path(src, b, t, te, out)) return 0;
        } else {
            set(out, PATH, t, pe);
        }
        if (!escaped && pe - t > 5 && b[t] == '/' && b[t + 1] == 's' && b[t + 2] == 'v' &&
            b[t + 3] == 'c' && b[t + 4] == '/') {
            int32_t v = t + 5, ve = v;
            while (ve < pe && b[ve] != '/') ve++;
            if (ve > v) set(out, SERVICE, v, ve);
        }
    }

    set(out, AGENT, q[4] + 1, q[5]);
    if (!request_time(b + q[5] + 1, b + (nq > 6 ? q[6] : e), &out->ms)) return 0;

    /* X-Forwarded-For as written: whether it names the client depends on who sent the line
     * (`forwarded.clients`). */
    if (nq > 6)
        set(out, XFF, q[6] + 1, nq > 7 ? q[7] : e);
    else
        set(out, XFF, -1, -1);
    return 1;
}

/* -- the module ----------------------------------------------------------------------------- */

static int writable(Py_buffer *view, Py_ssize_t items, Py_ssize_t size, const char *name) {
    if (view->len < items * size) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", name, view->len,
                     items * size);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(scan_doc,
             "scan(data, offsets, ok, ts, status, nbytes, ms, codes, counts)\n"
             "    -> (taken, values, value_offsets)\n\n"
             "Read the n lines of `data` (int32 `offsets`, n + 1 of them) and return how many\n"
             "are of the usual shape. ok[i] is 1 for those; their values fill the first rows of\n"
             "ts, status, nbytes (-1 for '-') and ms (NaN for none); codes[f][i] is the code of\n"
             "text field f (ip, user, method, path, service, agent, xff; -1 for null), counts[f]\n"
             "how many distinct values it has. The distinct values are in `values`, field after\n"
             "field, each field's in the order of their codes (request targets holding nginx\n"
             "escapes unescaped); `value_offsets` holds the int32 offsets of all of them, an\n"
             "Arrow string array's: field f's are the counts[f] + 1 from the sum of the counts\n"
             "before it.");

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer data, offsets, ok, ts, status, nbytes, ms, codes, counts;
    if (!PyArg_ParseTuple(args, "y*y*w*w*w*w*w*w*w*", &data, &offsets, &ok, &ts, &status,
                          &nbytes, &ms, &codes, &counts))
        return NULL;
    Py_buffer *views[] = {&data, &offsets, &ok, &ts, &status, &nbytes, &ms, &codes, &counts};
    PyObject *result = NULL, *values = NULL, *value_offsets = NULL;
    int32_t *ranges = NULL; /* each field's distinct values' starts and ends */
    table_t tables[NTEXT] = {{0}};
    source_t src = {0};
    Py_ssize_t n = offsets.len / 4 - 1;
    if (n < 0 || !writable(&ok, n, 1, "ok") || !writable(&ts, n, 8, "ts") ||
        !writable(&status, n, 4, "status") || !writable(&nbytes, n, 8, "nbytes") ||
        !writable(&ms, n, 8, "ms") || !writable(&codes, n * NTEXT, 4, "codes") ||
        !writable(&counts, NTEXT, 4, "counts"))
        goto done;
    const int32_t *off = offsets.buf;
    if (n > 0 && (off[0] < 0 || off[n] > data.len || off[n] < off[0])) {
        PyErr_SetString(PyExc_ValueError, "offsets reach outside data");
        goto done;
    }
    ranges = malloc(sizeof(int32_t) * (size_t)(2 * NTEXT * n + 1));
    if (!ranges) {
        PyErr_NoMemory();
        goto done;
    }
    for (int f = 0; f < NTEXT; f++) {
        tables[f].starts = ranges + (2 * f) * n;
        tables[f].ends = ranges + (2 * f + 1) * n;
    }

    const uint8_t *b = data.buf;
    src.data = b;
    src.size = n > 0 ? off[n] : 0;
    src.lines = (int32_t)n;
    uint8_t *ok_out = ok.buf;
    int64_t *ts_out = ts.buf, *bytes_out = nbytes.buf;
    int32_t *status_out = status.buf, *codes_out = codes.buf;
    double *ms_out = ms.buf;
    Py_ssize_t taken = 0;
    int out_of_memory = 0;
    Py_BEGIN_ALLOW_THREADS;
    line_t line;
    const uint8_t *last_time = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t s = off[i], e = off[i + 1];
        ok_out[i] = s <= e && off[0] <= s && e <= off[n] &&
                    scan_line(b, s, e, &line, &last_time, &src);
        if (!ok_out[i]) continue;
        ts_out[taken] = line.ts;
        status_out[taken] = line.status;
        bytes_out[taken] = line.bytes;
        ms_out[taken] = line.ms;
        for (int f = 0; f < NTEXT; f++) {
            int32_t start = line.text[f][0];
            int32_t code = start < 0 ? -1 : intern(&tables[f], &src, start, line.text[f][1]);
            out_of_memory |= code == -2;
            codes_out[f * n + taken] = code;
        }
        taken++;
    }
    Py_END_ALLOW_THREADS;
    if (out_of_memory || src.failed) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t distinct = 0, value_bytes = 0;
    for (int f = 0; f < NTEXT; f++) {
        ((int32_t *)counts.buf)[f] = tables[f].count;
        distinct += tables[f].count;
        for (int32_t k = 0; k < tables[f].count; k++)
            value_bytes += tables[f].ends[k] - tables[f].starts[k];
    }
    if (value_bytes > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "the block's distinct values exceed 2 GiB");
        goto done;
    }
    values = PyBytes_FromStringAndSize(NULL, value_bytes);
    value_offsets = PyBytes_FromStringAndSize(NULL, (distinct + 1) * (Py_ssize_t)sizeof(int32_t));
    if (!values || !value_offsets) goto done;
    /* The copy of each distinct value into one buffer, as an Arrow string array lays it out:
     * what the interpreter would otherwise do, a field at a time, with the lock held. */
    uint8_t *into = (uint8_t *)PyBytes_AS_STRING(values);
    int32_t *value_at = (int32_t *)PyBytes_AS_STRING(value_offsets);
    Py_BEGIN_ALLOW_THREADS;
    int32_t filled = 0;
    *value_at++ = 0;
    for (int f = 0; f < NTEXT; f++) {
        for (int32_t k = 0; k < tables[f].count; k++) {
            int32_t len = tables[f].ends[k] - tables[f].starts[k];
            memcpy(into + filled, at(&src, tables[f].starts[k]), (size_t)len);
            filled += len;
            *value_at++ = filled;
        }
    }
    Py_END_ALLOW_THREADS;
    result = Py_BuildValue("nOO", taken, values, value_offsets);
done:
    Py_XDECREF(values);
    Py_XDECREF(value_offsets);
    free(ranges);
    free(src.decoded);
    forget_targets(&src);
    for (int f = 0; f < NTEXT; f++) free(tables[f].slots);
    for (size_t k = 0; k < sizeof views / sizeof views[0]; k++) PyBuffer_Release(views[k]);
    return result;
}

PyDoc_STRVAR(line_offsets_doc,
             "line_offsets(data) -> bytes\n\n"
             "The int32 offsets of the lines of `data`: 0, the position after each newline, and\n"
             "len(data) when the last line lacks its newline. One pass of memchr.");

static PyObject *line_offsets(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    if (data.len >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "data must be smaller than 2 GiB");
        PyBuffer_Release(&data);
        return NULL;
    }
    const uint8_t *b = data.buf, *p = b, *end = b + data.len;
    Py_ssize_t room = data.len / 128 + 16, n = 1; /* log lines are longer: rarely grown */
    int32_t *o = PyMem_RawMalloc(room * sizeof(int32_t));
    int failed = o == NULL;
    Py_BEGIN_ALLOW_THREADS;
    if (!failed) o[0] = 0;
    while (!failed && p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end; /* the last line without its newline ends at the end */
        if (n == room) {
            int32_t *grown = PyMem_RawRealloc(o, 2 * room * sizeof(int32_t));
            if (!grown) {
                failed = 1;
                break;
            }
            o = grown;
            room *= 2;
        }
        o[n++] = (int32_t)(p - b);
    }
    Py_END_ALLOW_THREADS;
    PyObject *result =
        failed ? PyErr_NoMemory() : PyBytes_FromStringAndSize((const char *)o, n * sizeof(int32_t));
    PyMem_RawFree(o);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"line_offsets", line_offsets, METH_VARARGS, line_offsets_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_nginxscan",
    "The nginx combined fast path in C: one pass over a block, without the interpreter lock.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__nginxscan(void) { return PyModule_Create(&module); }
