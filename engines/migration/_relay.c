/*
 * A COPY relay between two libpq connections, for PostgreSQL -> PostgreSQL batches.
 *
 * COPY TO sends one message per row. Reading them in Python costs the worker about as much CPU as the
 * source server spends producing them; this loop reads them with PQgetCopyData and writes them to the
 * target's COPY FROM with PQputCopyData in 128 kB pieces, without the GIL.
 *
 * With `hashed`, the source stream is COPY binary whose last column is the row's bigint hash (the
 * validation checksum computed in the COPY's own scan): each tuple is written without that column and the
 * hashes are summed modulo 2**64, so the source reads each row once.
 *
 * This file does not include libpq's headers and is not linked against a libpq: the connections belong to
 * psycopg, whose libpq may be a private copy (psycopg-binary). The Python side (relay.py) passes the
 * addresses of that libpq's functions, checked against the connection first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*get_copy_data_fn)(void *conn, char **buffer, int async);
typedef int (*put_copy_data_fn)(void *conn, const char *buffer, int nbytes);
typedef void (*freemem_fn)(void *ptr);
typedef int (*set_nonblocking_fn)(void *conn, int arg);
typedef int (*is_nonblocking_fn)(const void *conn);

enum { RELAY_DONE = 0, RELAY_SOURCE_FAILED = 1, RELAY_TARGET_FAILED = 2, RELAY_LAYOUT = 3 };

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
#define PIECE (128 * 1024)

typedef struct {
    put_copy_data_fn put;
    void *conn;
    char *buf;
    size_t len, cap;
    int failed;
} out_t;

static int out_flush(out_t *o)
{
    if (o->len > 0 && !o->failed && o->put(o->conn, o->buf, (int)o->len) != 1)
        o->failed = 1;
    o->len = 0;
    return !o->failed;
}

static int out_add(out_t *o, const char *data, size_t n)
{
    if (o->len + n > o->cap) {
        if (!out_flush(o))
            return 0;
        if (n > o->cap) { /* a row larger than a piece goes on its own */
            if (o->put(o->conn, data, (int)n) != 1)
                o->failed = 1;
            return !o->failed;
        }
    }
    memcpy(o->buf + o->len, data, n);
    o->len += n;
    return 1;
}

static inline int32_t be32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
}

static inline int16_t be16(const unsigned char *p) { return (int16_t)(((uint16_t)p[0] << 8) | p[1]); }

static inline uint64_t be64(const unsigned char *p)
{
    return ((uint64_t)(uint32_t)be32(p) << 32) | (uint32_t)be32(p + 4);
}

/* One message of a hashed binary stream: [header] tuple* [trailer]. Writes the tuples without their last
 * field (an 8-byte hash, added to *sum). Returns 0 on a layout it does not expect. */
static int strip_hashes(const unsigned char *p, size_t len, int *header_done, out_t *o, uint64_t *sum,
                        Py_ssize_t *rows)
{
    const unsigned char *end = p + len;

    if (!*header_done) {
        int32_t ext;
        if (len < 19 || memcmp(p, SIGNATURE, 11) != 0)
            return 0;
        ext = be32(p + 15);
        if (ext < 0 || (size_t)ext > len - 19)
            return 0;
        if (!out_add(o, (const char *)p, 19 + (size_t)ext))
            return 1;
        p += 19 + ext;
        *header_done = 1;
    }
    while (p < end) {
        const unsigned char *tuple = p, *last = NULL;
        int16_t fields, i;
        unsigned char count[2];

        if (end - p < 2)
            return 0;
        fields = be16(p);
        p += 2;
        if (fields == -1) { /* the trailer */
            if (!out_add(o, (const char *)tuple, 2))
                return 1;
            continue;
        }
        if (fields < 1)
            return 0;
        for (i = 0; i < fields; i++) {
            int32_t flen;
            if (end - p < 4)
                return 0;
            flen = be32(p);
            if (flen < -1)
                return 0;
            if (i == fields - 1) {
                if (flen != 8 || end - p < 12)
                    return 0;
                last = p;
                *sum += be64(p + 4);
            }
            p += 4;
            if (flen > 0) {
                if (end - p < flen)
                    return 0;
                p += flen;
            }
        }
        count[0] = (unsigned char)((fields - 1) >> 8);
        count[1] = (unsigned char)((fields - 1) & 0xff);
        if (!out_add(o, (const char *)count, 2) || !out_add(o, (const char *)tuple + 2, (size_t)(last - tuple - 2)))
            return 1;
        (*rows)++;
    }
    return 1;
}

static PyObject *py_relay(PyObject *self, PyObject *args)
{
    unsigned long long src, dst, f_get, f_put, f_free, f_setnb, f_isnb;
    int hashed, status = RELAY_DONE, header_done = 0, was_nonblocking;
    Py_ssize_t rows = 0, messages = 0;
    uint64_t sum = 0;
    out_t o;

    if (!PyArg_ParseTuple(args, "KK(KKKKK)p", &src, &dst, &f_get, &f_put, &f_free, &f_setnb, &f_isnb, &hashed))
        return NULL;
    if (!src || !dst || !f_get || !f_put || !f_free || !f_setnb || !f_isnb) {
        PyErr_SetString(PyExc_ValueError, "relay: a connection or a libpq function is missing");
        return NULL;
    }
    get_copy_data_fn get = (get_copy_data_fn)(uintptr_t)f_get;
    freemem_fn freemem = (freemem_fn)(uintptr_t)f_free;
    set_nonblocking_fn setnb = (set_nonblocking_fn)(uintptr_t)f_setnb;
    is_nonblocking_fn isnb = (is_nonblocking_fn)(uintptr_t)f_isnb;
    void *source = (void *)(uintptr_t)src, *target = (void *)(uintptr_t)dst;

    o.put = (put_copy_data_fn)(uintptr_t)f_put;
    o.conn = target;
    o.len = 0;
    o.cap = PIECE;
    o.failed = 0;
    o.buf = malloc(PIECE);
    if (o.buf == NULL)
        return PyErr_NoMemory();

    Py_BEGIN_ALLOW_THREADS
    /* blocking writes: PQputCopyData then waits for room instead of returning 0 */
    was_nonblocking = isnb(target);
    if (was_nonblocking)
        setnb(target, 0);
    for (;;) {
        char *data = NULL;
        int n = get(source, &data, 0);
        if (n == -1)
            break; /* the COPY is complete */
        if (n < 0) {
            status = RELAY_SOURCE_FAILED;
            break;
        }
        messages++;
        if (hashed) {
            if (!strip_hashes((const unsigned char *)data, (size_t)n, &header_done, &o, &sum, &rows))
                status = RELAY_LAYOUT;
        } else {
            out_add(&o, data, (size_t)n);
        }
        freemem(data);
        if (status != RELAY_DONE)
            break;
        if (o.failed) {
            status = RELAY_TARGET_FAILED;
            break;
        }
    }
    if (status == RELAY_DONE && !out_flush(&o))
        status = RELAY_TARGET_FAILED;
    if (was_nonblocking)
        setnb(target, 1);
    Py_END_ALLOW_THREADS
    free(o.buf);
    return Py_BuildValue("inKn", status, hashed ? rows : messages, (unsigned long long)sum, messages);
}

static PyMethodDef methods[] = {
    {"relay", py_relay, METH_VARARGS,
     "relay(source_ptr, target_ptr, (PQgetCopyData, PQputCopyData, PQfreemem, PQsetnonblocking,"
     " PQisnonblocking), hashed) -> (status, rows, hash_sum, messages). status: 0 done, 1 the source's COPY"
     " failed, 2 writing to the target failed, 3 unexpected binary layout (hashed)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_relay", NULL, -1, methods};

PyMODINIT_FUNC PyInit__relay(void) { return PyModule_Create(&module); }
