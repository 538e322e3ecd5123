/*
 * PostgreSQL's hashtextextended(text, 0) for Python, and the sum of it over the lines of a COPY payload.
 *
 * The MySQL -> PostgreSQL text path hashes each COPY line it sends and validation has PostgreSQL hash the
 * same line rebuilt from the stored row with hashtextextended(): both sides must compute the same 64-bit
 * value. The function below is Bob Jenkins' lookup3 hash as PostgreSQL's hash_bytes_extended() uses it
 * (little-endian word reads; the lowest byte of c reserved for the length in the tail; the seed, when not
 * zero, mixed into a and b first; the result (b << 32) | c). engines/migration/linehash.py holds the same
 * algorithm in Python, used when this module was not compiled; tests compare both with the server.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))

#define MIX(a, b, c)                                \
    {                                               \
        a -= c; a ^= ROT(c, 4); c += b;             \
        b -= a; b ^= ROT(a, 6); a += c;             \
        c -= b; c ^= ROT(b, 8); b += a;             \
        a -= c; a ^= ROT(c, 16); c += b;            \
        b -= a; b ^= ROT(a, 19); a += c;            \
        c -= b; c ^= ROT(b, 4); b += a;             \
    }

#define FINAL(a, b, c)                              \
    {                                               \
        c ^= b; c -= ROT(b, 14);                    \
        a ^= c; a -= ROT(c, 11);                    \
        b ^= a; b -= ROT(a, 25);                    \
        c ^= b; c -= ROT(b, 16);                    \
        a ^= c; a -= ROT(c, 4);                     \
        b ^= a; b -= ROT(a, 14);                    \
        c ^= b; c -= ROT(b, 24);                    \
    }

static inline uint32_t word_le(const unsigned char *k)
{
    return (uint32_t)k[0] | ((uint32_t)k[1] << 8) | ((uint32_t)k[2] << 16) | ((uint32_t)k[3] << 24);
}

static uint64_t hash_bytes_extended(const unsigned char *k, size_t keylen, uint64_t seed)
{
    uint32_t a, b, c, len = (uint32_t)keylen;

    a = b = c = 0x9e3779b9 + len + 3923095;
    if (seed != 0) {
        a += (uint32_t)(seed >> 32);
        b += (uint32_t)seed;
        MIX(a, b, c);
    }
    while (len >= 12) {
        a += word_le(k);
        b += word_le(k + 4);
        c += word_le(k + 8);
        MIX(a, b, c);
        k += 12;
        len -= 12;
    }
    switch (len) { /* the lowest byte of c is reserved for the length */
    case 11: c += (uint32_t)k[10] << 24; /* fall through */
    case 10: c += (uint32_t)k[9] << 16;  /* fall through */
    case 9:  c += (uint32_t)k[8] << 8;   /* fall through */
    case 8:  b += (uint32_t)k[7] << 24;  /* fall through */
    case 7:  b += (uint32_t)k[6] << 16;  /* fall through */
    case 6:  b += (uint32_t)k[5] << 8;   /* fall through */
    case 5:  b += k[4];                  /* fall through */
    case 4:  a += (uint32_t)k[3] << 24;  /* fall through */
    case 3:  a += (uint32_t)k[2] << 16;  /* fall through */
    case 2:  a += (uint32_t)k[1] << 8;   /* fall through */
    case 1:  a += k[0];
    }
    FINAL(a, b, c);
    return ((uint64_t)b << 32) | c;
}

static PyObject *py_hash(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    unsigned long long seed = 0;
    uint64_t h;

    if (!PyArg_ParseTuple(args, "y*|K", &buf, &seed))
        return NULL;
    h = hash_bytes_extended((const unsigned char *)buf.buf, (size_t)buf.len, seed);
    PyBuffer_Release(&buf);
    return PyLong_FromLongLong((long long)h); /* PostgreSQL returns it as a signed bigint */
}

static PyObject *py_sum_lines(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    const unsigned char *p, *end, *nl;
    uint64_t total = 0;
    Py_ssize_t n = 0;

    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    p = (const unsigned char *)buf.buf;
    end = p + buf.len;
    Py_BEGIN_ALLOW_THREADS
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            nl = end; /* a last line without its newline */
        total += hash_bytes_extended(p, (size_t)(nl - p), 0);
        n++;
        p = nl + 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return Py_BuildValue("nK", n, (unsigned long long)total);
}

static PyMethodDef methods[] = {
    {"hash", py_hash, METH_VARARGS, "hash(data, seed=0) -> PostgreSQL's hashtextextended(data, seed), signed."},
    {"sum_lines", py_sum_lines, METH_VARARGS,
     "sum_lines(data) -> (lines, sum of their hashes modulo 2**64); lines end with \\n."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linehash", NULL, -1, methods};

PyMODINIT_FUNC PyInit__linehash(void) { return PyModule_Create(&module); }
