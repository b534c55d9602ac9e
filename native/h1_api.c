/* sidecar._h1api: the per-request calls of the HTTP/1.1 fast path as CPython C-API
 * functions, for the ones where a cffi call's own cost (its argument conversions, and the
 * Python around it that prepares them and reads the results back) is most of the work.
 *
 *   response(status, headers, body, method, http_version, keep_alive, date, server, extra)
 *       -> (data, chunked, keep_alive) or None
 *
 * is sidecar/http/h1_response.py's response_whole in one call: the status line looked up,
 * the fields gathered from the app's (name, value) pairs, then native/h1.c's h1_response
 * (the same C the cffi module _h1 runs), the bytes and the two facts returned.  None where
 * the C path declines (an unusual status or field, a pair that is not two bytes objects, a
 * response over the buffer): response_whole's Python path, its twin, then decides.
 *
 * No state but scratch buffers: the front-end calls it from its loop's thread only, and the
 * GIL is held throughout (nothing here releases it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "h1.h"

#define OUT_CAP (1 << 16)      /* as response_whole's _RESP_CAP: a bigger response: Python */
#define FIELDS_CAP (1 << 16)

static char out_buf[OUT_CAP];
static char fields_buf[FIELDS_CAP];
static PyObject *status_lines;   /* int -> the status line, response_whole's _STATUS_LINES */
static PyObject *head_method;    /* b"HEAD" */
static PyObject *http10;         /* "1.0" */

/* Append each pair of `seq` (a list or tuple of 2-item lists or tuples of exact bytes) to
 * the fields as "name NUL value", LF between pairs, as b"\n".join(map(b"\0".join, ...)).
 * 0 and *n advanced; -1 (no exception set) to decline. */
static int add_pairs(PyObject *seq, size_t *len, size_t *n) {
    if (!PyList_CheckExact(seq) && !PyTuple_CheckExact(seq)) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = items[i];
        if ((!PyList_CheckExact(pair) && !PyTuple_CheckExact(pair))
                || PySequence_Fast_GET_SIZE(pair) != 2)
            return -1;
        PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
        PyObject *value = PySequence_Fast_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) return -1;
        size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
        size_t need = (*n ? 1 : 0) + nl + 1 + vl;
        if (*len + need > FIELDS_CAP) return -1;
        char *o = fields_buf + *len;
        if (*n) *o++ = '\n';
        memcpy(o, PyBytes_AS_STRING(name), nl);
        o[nl] = '\0';
        memcpy(o + nl + 1, PyBytes_AS_STRING(value), vl);
        *len += need;
        *n += 1;
    }
    return 0;
}

/* date or server: bytes, or None (none); anything else declines (-1) */
static int opt_bytes(PyObject *v, const char **p, size_t *len) {
    if (v == Py_None) {
        *p = NULL;
        *len = 0;
        return 0;
    }
    if (!PyBytes_CheckExact(v)) return -1;
    *p = PyBytes_AS_STRING(v);
    *len = (size_t)PyBytes_GET_SIZE(v);
    return 0;
}

static PyObject *response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "response() takes 9 arguments");
        return NULL;
    }
    PyObject *status = args[0], *headers = args[1], *body = args[2], *method = args[3],
             *version = args[4], *keep_alive = args[5], *date = args[6], *server = args[7],
             *extra = args[8];
    if (status_lines == NULL || !PyLong_CheckExact(status) || !PyBytes_CheckExact(body))
        Py_RETURN_NONE;
    PyObject *line = PyDict_GetItemWithError(status_lines, status);   /* borrowed */
    if (line == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!PyBytes_CheckExact(line)) Py_RETURN_NONE;
    size_t flen = 0, nfields = 0;
    if (add_pairs(extra, &flen, &nfields) < 0 || add_pairs(headers, &flen, &nfields) < 0)
        Py_RETURN_NONE;
    const char *dp, *sp;
    size_t dl, sl;
    if (opt_bytes(date, &dp, &dl) < 0 || opt_bytes(server, &sp, &sl) < 0) Py_RETURN_NONE;
    int ka = PyObject_IsTrue(keep_alive);
    if (ka < 0) return NULL;
    int is_head = PyObject_RichCompareBool(method, head_method, Py_EQ);
    if (is_head < 0) return NULL;
    int is_10 = PyObject_RichCompareBool(version, http10, Py_EQ);
    if (is_10 < 0) return NULL;
    unsigned flags = (is_head ? H1_RESP_HEAD_REQUEST : 0) | (is_10 ? H1_RESP_HTTP10 : 0)
                     | (ka ? H1_RESP_KEEP_ALIVE : 0);
    int64_t resp[H1_RESP_NFACTS];
    long code = PyLong_AsLong(status);
    if (code == -1 && PyErr_Occurred()) return NULL;
    int64_t n = h1_response((int)code, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line),
                            fields_buf, flen, nfields, flags, dp, dl, sp, sl,
                            PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body),
                            out_buf, OUT_CAP, resp);
    if (n <= 0) Py_RETURN_NONE;
    PyObject *data = PyBytes_FromStringAndSize(out_buf, (Py_ssize_t)n);
    if (data == NULL) return NULL;
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *chunked = resp[H1_RESP_CHUNKED] == 1 ? Py_True : Py_False;
    PyObject *keep = resp[H1_RESP_KEEP] == 1 ? Py_True : Py_False;
    Py_INCREF(chunked);
    Py_INCREF(keep);
    PyTuple_SET_ITEM(result, 0, data);
    PyTuple_SET_ITEM(result, 1, chunked);
    PyTuple_SET_ITEM(result, 2, keep);
    return result;
}

/* set_status_lines(d): the table response() looks status lines up in (kept) */
static PyObject *set_status_lines(PyObject *self, PyObject *d) {
    (void)self;
    if (!PyDict_CheckExact(d)) {
        PyErr_SetString(PyExc_TypeError, "set_status_lines() takes a dict");
        return NULL;
    }
    Py_INCREF(d);
    Py_XSETREF(status_lines, d);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"response", (PyCFunction)(void (*)(void))response, METH_FASTCALL,
     "response(status, headers, body, method, http_version, keep_alive, date, server, extra)"
     " -> (data, chunked, keep_alive), or None where the Python path must decide"},
    {"set_status_lines", set_status_lines, METH_O,
     "set_status_lines(dict): status -> status line, as response_whole's table"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar._h1api",
    "HTTP/1.1 fast-path calls as C-API functions (native/h1_api.c)", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h1api(void) {
    head_method = PyBytes_FromString("HEAD");
    http10 = PyUnicode_FromString("1.0");
    if (head_method == NULL || http10 == NULL) return NULL;
    return PyModule_Create(&module);
}
