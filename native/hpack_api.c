/* sidecar._hpackapi: an HTTP/2 request's header block decoded in one C call, the C twin of
 * sidecar/http/h2_fast.py's Decoder._decode (hpack's decoder, pure Python, field by field).
 * The state stays hpack's own: the decoder's HeaderTable (its deque of dynamic entries, its
 * size and limits) is read and changed here exactly as hpack changes it (entries added
 * through the table's own ``add``, a size update through ``header_table_size``), so h2, which
 * decodes through the same decoder object, stays in step.  The Python method stays the
 * definition of the behaviour: SIDECAR_NO_SPEEDUPS=1 selects it, and
 * tests/http/test_hpack_api.py compares the two -- lists, errors and the table after each
 * block -- on a corpus of encoded blocks and their corruptions.
 *
 *   setup(static_table, huffman_table, header_tuple, never_indexed_tuple, decoding_error,
 *         invalid_index, invalid_table_size, oversized_list, oversized_marker, factor)
 *   decode_block(decoder, data) -> list
 *
 * huffman_table is hpack's nibble state machine (huffman_table.HUFFMAN_TABLE: 4096 triples
 * of (next state, flags, byte)), so that Huffman strings decode, and fail, as hpack's do.
 *
 * The GIL is held throughout. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define STATIC_LEN 61
#define VARINT_MAX_LENGTH 5      /* hpack.hpack.VARINT_MAX_LENGTH */
#define H_COMPLETE 1
#define H_EMIT 2
#define H_FAIL 4

static PyObject *static_entries[STATIC_LEN];   /* (name, value) tuples of bytes */
static struct { uint8_t state, flags, sym; } huff[4096];
static PyTypeObject *header_tuple, *never_tuple;
static PyObject *DecodingError, *InvalidIndex, *InvalidTableSize, *Oversized, *oversized_marker;
static PyObject *s_header_table, *s_dynamic_entries, *s_max_header_list_size,
                *s_max_allowed_table_size, *s_header_table_size, *s_maxsize, *s_add;
static long long oversize_factor = 4;
static int ready = 0;

/* hpack.decode_integer: the value and the bytes used, or -1 with DecodingError set */
static Py_ssize_t decode_integer(const uint8_t *p, Py_ssize_t n, int prefix, uint64_t *out) {
    if (n < 1)
        goto truncated;
    uint64_t max = (1u << prefix) - 1;
    uint64_t number = p[0] & max;
    Py_ssize_t index = 1;
    int shift = 0;
    if (number == max) {
        for (;;) {
            if (index >= n)
                goto truncated;
            uint8_t next = p[index++];
            if (shift < 57)
                number += (uint64_t)(next & 0x7F) << shift;
            else if (next & 0x7F)
                number = UINT64_MAX;   /* past any size: an error wherever it is used */
            if (!(next & 0x80))
                break;
            shift += 7;
            if (index > VARINT_MAX_LENGTH) {
                PyErr_SetString(DecodingError, "Variable integer representation is too long");
                return -1;
            }
        }
    }
    *out = number;
    return index;
truncated:
    PyErr_SetString(DecodingError, "Unable to decode HPACK integer representation");
    return -1;
}

/* huffman_table.decode_huffman */
static PyObject *decode_huffman(const uint8_t *p, Py_ssize_t n) {
    if (n == 0)
        return PyBytes_FromStringAndSize("", 0);
    /* at most 8 symbols of 5+ bits per 5 bytes: 2 bytes out per byte in is a bound */
    PyObject *out = PyBytes_FromStringAndSize(NULL, 2 * n);
    if (out == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_ssize_t k = 0;
    unsigned state = 0, flags = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (int half = 0; half < 2; half++) {
            unsigned nibble = half ? (p[i] & 0x0F) : (p[i] >> 4);
            unsigned idx = state * 16 + nibble;
            state = huff[idx].state;
            flags = huff[idx].flags;
            if (flags & H_FAIL) {
                Py_DECREF(out);
                PyErr_SetString(DecodingError, "Invalid Huffman string");
                return NULL;
            }
            if (flags & H_EMIT)
                o[k++] = huff[idx].sym;
        }
    }
    if (!(flags & H_COMPLETE)) {
        Py_DECREF(out);
        PyErr_SetString(DecodingError, "Incomplete Huffman string");
        return NULL;
    }
    if (_PyBytes_Resize(&out, k) < 0)
        return NULL;
    return out;
}

/* HeaderTable.get_by_index: a new reference to the (name, value) entry */
static PyObject *get_by_index(PyObject *dynamic, uint64_t index) {
    if (index >= 1 && index <= STATIC_LEN) {
        Py_INCREF(static_entries[index - 1]);
        return static_entries[index - 1];
    }
    if (index > STATIC_LEN) {
        Py_ssize_t len = PySequence_Size(dynamic);
        if (len < 0)
            return NULL;
        if (index - 1 - STATIC_LEN < (uint64_t)len)
            return PySequence_GetItem(dynamic, (Py_ssize_t)(index - 1 - STATIC_LEN));
    }
    PyErr_Format(InvalidIndex, "Invalid table index %llu", (unsigned long long)index);
    return NULL;
}

/* ``obj.name`` as a long long: 0, or -1 with an error set */
static int attr_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *new_header(PyTypeObject *type, PyObject *name, PyObject *value) {
    PyObject *t = type->tp_alloc(type, 2);   /* tuple.__new__(type, (name, value)) */
    if (t == NULL)
        return NULL;
    Py_INCREF(name);
    Py_INCREF(value);
    PyTuple_SET_ITEM(t, 0, name);
    PyTuple_SET_ITEM(t, 1, value);
    return t;
}

/* a length-prefixed string (7-bit prefix, H bit): a new bytes, and the bytes used */
static PyObject *string_at(const uint8_t *p, Py_ssize_t n, Py_ssize_t *used) {
    uint64_t length;
    Py_ssize_t c = decode_integer(p, n, 7, &length);
    if (c < 0)
        return NULL;
    if (length > (uint64_t)(n - c)) {
        PyErr_SetString(DecodingError, "Truncated header block");
        return NULL;
    }
    *used = c + (Py_ssize_t)length;
    if (p[0] & 0x80)
        return decode_huffman(p + c, (Py_ssize_t)length);
    return PyBytes_FromStringAndSize((const char *)p + c, (Py_ssize_t)length);
}

static PyObject *decode_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode_block(decoder, data: bytes)");
        return NULL;
    }
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "sidecar._hpackapi.setup() was not called");
        return NULL;
    }
    PyObject *decoder = args[0], *data_obj = args[1];
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(data_obj);
    Py_ssize_t n = PyBytes_GET_SIZE(data_obj);
    PyObject *table = NULL, *dynamic = NULL, *headers = NULL, *name = NULL, *value = NULL;
    PyObject *header = NULL;
    long long limit, max_allowed, table_size;
    if (attr_ll(decoder, s_max_header_list_size, &limit) < 0)
        return NULL;
    if ((table = PyObject_GetAttr(decoder, s_header_table)) == NULL)
        return NULL;
    if ((dynamic = PyObject_GetAttr(table, s_dynamic_entries)) == NULL)
        goto fail;
    if ((headers = PyList_New(0)) == NULL)
        goto fail;
    long long size = 0;
    int over = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        uint8_t c = data[i];
        const uint8_t *p = data + i;
        Py_ssize_t rest = n - i, used;
        uint64_t index;
        if (c & 0x80) {   /* indexed field */
            if ((used = decode_integer(p, rest, 7, &index)) < 0)
                goto fail;
            PyObject *entry = get_by_index(dynamic, index);
            if (entry == NULL)
                goto fail;
            header = new_header(header_tuple, PyTuple_GET_ITEM(entry, 0),
                                PyTuple_GET_ITEM(entry, 1));
            Py_DECREF(entry);
            if (header == NULL)
                goto fail;
        } else if (c & 0x40 || !(c & 0x20)) {
            /* a literal: with incremental indexing (01), without (0000), never indexed (0001) */
            int index_it = (c & 0xC0) == 0x40;
            int prefix = index_it ? 6 : 4;
            int never = !index_it && (c & 0x10);
            uint64_t name_index = c & (index_it ? 0x3F : 0x0F);
            Py_ssize_t at;
            if (name_index) {
                if ((at = decode_integer(p, rest, prefix, &index)) < 0)
                    goto fail;
                PyObject *entry = get_by_index(dynamic, index);
                if (entry == NULL)
                    goto fail;
                name = PyTuple_GET_ITEM(entry, 0);
                Py_INCREF(name);
                Py_DECREF(entry);
            } else {
                Py_ssize_t name_used;
                if ((name = string_at(p + 1, rest - 1, &name_used)) == NULL)
                    goto fail;
                at = 1 + name_used;
            }
            Py_ssize_t value_used;
            if ((value = string_at(p + at, rest - at, &value_used)) == NULL)
                goto fail;
            used = at + value_used;
            header = new_header(never ? never_tuple : header_tuple, name, value);
            if (header == NULL)
                goto fail;
            if (index_it) {
                PyObject *r = PyObject_CallMethodObjArgs(table, s_add, name, value, NULL);
                if (r == NULL)
                    goto fail;
                Py_DECREF(r);
            }
            Py_CLEAR(name);
            Py_CLEAR(value);
        } else {   /* 001: a dynamic table size update, only before the first field */
            if (PyList_GET_SIZE(headers) || over) {
                PyErr_SetString(DecodingError, "Table size update not at the start of the block");
                goto fail;
            }
            uint64_t new_size;
            if ((used = decode_integer(p, rest, 5, &new_size)) < 0)
                goto fail;
            if (attr_ll(decoder, s_max_allowed_table_size, &max_allowed) < 0)
                goto fail;
            if (new_size > (uint64_t)max_allowed) {
                PyErr_SetString(InvalidTableSize, "Encoder exceeded max allowable table size");
                goto fail;
            }
            PyObject *sz = PyLong_FromUnsignedLongLong(new_size);
            if (sz == NULL)
                goto fail;
            int r = PyObject_SetAttr(decoder, s_header_table_size, sz);
            Py_DECREF(sz);
            if (r < 0)
                goto fail;
            i += used;
            continue;
        }
        i += used;
        /* RFC 7541 4.1: each field's size; the list's limit as Decoder._decode applies it */
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(header, 0))
                + PyBytes_GET_SIZE(PyTuple_GET_ITEM(header, 1)) + 32;
        if (size > limit) {
            if (size > limit * oversize_factor) {
                PyErr_Format(Oversized, "A header list larger than %lld has been received",
                             limit);
                goto fail;
            }
            over = 1;
            if (PyList_SetSlice(headers, 0, PyList_GET_SIZE(headers), NULL) < 0)
                goto fail;
        }
        if (!over && PyList_Append(headers, header) < 0)
            goto fail;
        Py_CLEAR(header);
    }
    /* Decoder._assert_valid_table_size */
    if (attr_ll(table, s_maxsize, &table_size) < 0
            || attr_ll(decoder, s_max_allowed_table_size, &max_allowed) < 0)
        goto fail;
    if (table_size > max_allowed) {
        PyErr_SetString(InvalidTableSize, "Encoder did not shrink table size to within the max");
        goto fail;
    }
    Py_DECREF(table);
    Py_DECREF(dynamic);
    if (over) {
        Py_DECREF(headers);
        return Py_BuildValue("[O]", oversized_marker);
    }
    return headers;
fail:
    Py_XDECREF(table);
    Py_XDECREF(dynamic);
    Py_XDECREF(headers);
    Py_XDECREF(name);
    Py_XDECREF(value);
    Py_XDECREF(header);
    return NULL;
}

static PyObject *setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "setup() takes 10 arguments");
        return NULL;
    }
    PyObject *static_table = args[0], *huffman = args[1];
    if (!PyTuple_Check(static_table) || PyTuple_GET_SIZE(static_table) != STATIC_LEN
            || !PyList_Check(huffman) || PyList_GET_SIZE(huffman) != 4096
            || !PyType_Check(args[2]) || !PyType_Check(args[3])) {
        PyErr_SetString(PyExc_ValueError, "setup(): not hpack's tables and types");
        return NULL;
    }
    for (int i = 0; i < STATIC_LEN; i++) {
        PyObject *e = PyTuple_GET_ITEM(static_table, i);
        if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 2) {
            PyErr_SetString(PyExc_ValueError, "setup(): a static table entry is not a pair");
            return NULL;
        }
        Py_INCREF(e);
        Py_XSETREF(static_entries[i], e);
    }
    for (int i = 0; i < 4096; i++) {
        PyObject *t = PyList_GET_ITEM(huffman, i);
        long a, b, c;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3
                || (a = PyLong_AsLong(PyTuple_GET_ITEM(t, 0))) < 0 || a > 255
                || (b = PyLong_AsLong(PyTuple_GET_ITEM(t, 1))) < 0 || b > 255
                || (c = PyLong_AsLong(PyTuple_GET_ITEM(t, 2))) < 0 || c > 255) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "setup(): not hpack's Huffman table");
            return NULL;
        }
        huff[i].state = (uint8_t)a;
        huff[i].flags = (uint8_t)b;
        huff[i].sym = (uint8_t)c;
    }
    Py_INCREF(args[2]);
    Py_XSETREF(header_tuple, (PyTypeObject *)args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(never_tuple, (PyTypeObject *)args[3]);
    PyObject **errors[] = {&DecodingError, &InvalidIndex, &InvalidTableSize, &Oversized,
                           &oversized_marker};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(args[4 + i]);
        Py_XSETREF(*errors[i], args[4 + i]);
    }
    oversize_factor = PyLong_AsLongLong(args[9]);
    if (oversize_factor == -1 && PyErr_Occurred())
        return NULL;
    ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL, "hpack's tables, types, errors"},
    {"decode_block", (PyCFunction)(void (*)(void))decode_block, METH_FASTCALL,
     "decode_block(decoder, data) -> list of header tuples"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar._hpackapi",
    "An HPACK header block decoded in one C call (native/hpack_api.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__hpackapi(void) {
    static const char *const names[] = {"header_table", "dynamic_entries", "max_header_list_size",
        "max_allowed_table_size", "header_table_size", "maxsize", "add"};
    PyObject **slots[] = {&s_header_table, &s_dynamic_entries, &s_max_header_list_size,
                          &s_max_allowed_table_size, &s_header_table_size, &s_maxsize, &s_add};
    for (int i = 0; i < 7; i++)
        if ((*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
