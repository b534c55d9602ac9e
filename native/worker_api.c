/* sidecar._workerapi: the worker's per-request calls as CPython C-API functions, for the
 * steps of every request where the Python is many small type checks and dict/tuple building
 * (sidecar/worker/link.py's _open_http, sidecar/worker/http_stream.py's send).  Each has a
 * Python twin that stays the definition of the behaviour: SIDECAR_NO_SPEEDUPS=1 (or
 * ``link.speedups = False`` / ``http_stream.speedups = False``) runs it instead, and
 * tests/worker/test_worker_api.py compares the two on a corpus.
 *
 *   http_scope(ev, state, root_path, frontend, asgi) -> dict or None
 *
 * is events.check_request + the scope of HostLink._open_http for a decoded HTTP_REQUEST of
 * 14 fields (no tls): every field's type checked as check_request checks it, the headers as
 * a new list of (name, value) tuples, and the scope dict with the keys in the same order,
 * ``state`` (a dict) copied, ``asgi`` (a dict) copied, ``root_path`` the event's or else the
 * worker's, and the extensions _open_http offers (``frontend``: pathsend; HTTP/2 or
 * TE: trailers: trailers).  None for anything else (a tls field, a wrong type, a state that
 * is not a dict): the Python path then decides, and raises what check_request raises.
 *
 *   response_headers(headers) -> (list, size) or None
 *
 * is the usual case of HttpStream.send's http.response.start: the app's headers (a list or
 * tuple of (name, value) pairs, tuples or lists of exact bytes, each name a token, no CR, LF
 * or NUL in a value) as a new list of tuples -- the app's own tuples where it gave tuples:
 * they cannot change -- and the record's size bound (FRAMING + each pair's bytes and
 * HEADER_FRAMING, as set by setup()).  None for anything else: send's Python path then
 * checks, and says what is wrong.
 *
 * The GIL is held throughout and nothing here keeps state between calls but the interned
 * keys and the constants of setup(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static Py_ssize_t framing = 32, header_framing = 11;   /* events.FRAMING, HEADER_FRAMING */

/* scope keys, interned: apps look them up with literal (interned) strings */
enum { K_TYPE, K_ASGI, K_HTTP_VERSION, K_SERVER, K_CLIENT, K_SCHEME, K_METHOD, K_ROOT_PATH,
       K_PATH, K_RAW_PATH, K_QUERY_STRING, K_HEADERS, K_STATE, K_EXTENSIONS, K_COUNT };
static const char *const key_names[K_COUNT] = {
    "type", "asgi", "http_version", "server", "client", "scheme", "method", "root_path",
    "path", "raw_path", "query_string", "headers", "state", "extensions"};
static PyObject *keys[K_COUNT];
static PyObject *s_http, *s_pathsend, *s_trailers;
/* the scope's keys in order, values None: copied, then filled (a copy keeps the key table,
 * so no insert resizes it) -- one without extensions, one with */
static PyObject *scope_plain, *scope_ext;

static unsigned char tchar[256];    /* RFC 9110 token bytes (fields.TCHARS) */
static unsigned char bad_value[256];   /* CR, LF, NUL */

/* client / server: None, or a list [str, int] (server: [str, int or None]) -> a tuple */
static int addr(PyObject *v, int port_may_be_none, PyObject **out) {
    if (v == Py_None) {
        Py_INCREF(v);
        *out = v;
        return 0;
    }
    if (!PyList_CheckExact(v) || PyList_GET_SIZE(v) != 2) return -1;
    PyObject *host = PyList_GET_ITEM(v, 0), *port = PyList_GET_ITEM(v, 1);
    if (!PyUnicode_CheckExact(host)) return -1;
    if (!PyLong_CheckExact(port) && !(port_may_be_none && port == Py_None)) return -1;
    *out = PyTuple_Pack(2, host, port);
    return *out == NULL ? -2 : 0;
}

/* the request's headers, [[bytes, bytes], ...], as a new list of tuples; *te: a
 * (b"te", b"trailers") pair is among them.  NULL with no exception: decline. */
static PyObject *request_pairs(PyObject *headers, int *te) {
    if (!PyList_CheckExact(headers)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(headers);
    PyObject *pairs = PyList_New(n);
    if (pairs == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        if (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2) goto decline;
        PyObject *name = PyList_GET_ITEM(pair, 0), *value = PyList_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) goto decline;
        if (PyBytes_GET_SIZE(name) == 2 && PyBytes_GET_SIZE(value) == 8
                && memcmp(PyBytes_AS_STRING(name), "te", 2) == 0
                && memcmp(PyBytes_AS_STRING(value), "trailers", 8) == 0)
            *te = 1;
        PyObject *t = PyTuple_Pack(2, name, value);
        if (t == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
        PyList_SET_ITEM(pairs, i, t);
    }
    return pairs;
decline:
    Py_DECREF(pairs);
    return NULL;
}

static PyObject *new_ref(PyObject *v) {
    Py_INCREF(v);
    return v;
}

static int put_empty(PyObject *d, PyObject *key) {
    PyObject *empty = PyDict_New();
    if (empty == NULL) return -1;
    int rc = PyDict_SetItem(d, key, empty);
    Py_DECREF(empty);
    return rc;
}

static PyObject *http_scope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "http_scope() takes 5 arguments");
        return NULL;
    }
    PyObject *ev = args[0], *state = args[1], *worker_root = args[2], *asgi = args[4];
    int frontend = PyObject_IsTrue(args[3]);
    if (frontend < 0) return NULL;
    if (!PyList_CheckExact(ev) || PyList_GET_SIZE(ev) != 14 || !PyDict_CheckExact(state)
            || !PyDict_CheckExact(asgi))
        Py_RETURN_NONE;
    PyObject **f = ((PyListObject *)ev)->ob_item;
    PyObject *method = f[2], *scheme = f[3], *path = f[4], *raw_path = f[5], *query = f[6],
             *headers = f[7], *client = f[8], *server = f[9], *version = f[10], *root = f[11],
             *body = f[12], *more = f[13];
    if (!PyUnicode_CheckExact(method) || !PyBytes_CheckExact(body) || !PyBool_Check(more)
            || !PyUnicode_CheckExact(scheme) || !PyUnicode_CheckExact(path)
            || !PyBytes_CheckExact(raw_path) || !PyBytes_CheckExact(query)
            || !PyUnicode_CheckExact(version) || !PyUnicode_CheckExact(root))
        Py_RETURN_NONE;
    if (PyUnicode_GET_LENGTH(root) == 0) root = worker_root;
    PyObject *v[K_COUNT] = {NULL};
    int rc = addr(client, 0, &v[K_CLIENT]);
    if (rc == 0) rc = addr(server, 1, &v[K_SERVER]);
    int te = 0;
    if (rc == 0) {
        v[K_HEADERS] = request_pairs(headers, &te);
        rc = v[K_HEADERS] != NULL ? 0 : PyErr_Occurred() ? -2 : -1;
    }
    PyObject *scope = NULL;
    if (rc < 0) goto done;
    int trailers = te || PyUnicode_CompareWithASCIIString(version, "2") == 0;
    int ext = frontend || trailers;
    rc = -2;
    v[K_TYPE] = new_ref(s_http);
    v[K_ASGI] = PyDict_Copy(asgi);
    v[K_HTTP_VERSION] = new_ref(version);
    v[K_SCHEME] = new_ref(scheme);
    v[K_METHOD] = new_ref(method);
    v[K_ROOT_PATH] = new_ref(root);
    v[K_PATH] = new_ref(path);
    v[K_RAW_PATH] = new_ref(raw_path);
    v[K_QUERY_STRING] = new_ref(query);
    v[K_STATE] = PyDict_Copy(state);
    if (v[K_ASGI] == NULL || v[K_STATE] == NULL) goto done;
    if (ext) {
        v[K_EXTENSIONS] = PyDict_New();
        if (v[K_EXTENSIONS] == NULL
                || (frontend && put_empty(v[K_EXTENSIONS], s_pathsend) < 0)
                || (trailers && put_empty(v[K_EXTENSIONS], s_trailers) < 0))
            goto done;
    }
    scope = PyDict_Copy(ext ? scope_ext : scope_plain);
    if (scope == NULL) goto done;
    for (int k = 0; k < (ext ? K_COUNT : K_EXTENSIONS); k++) {
        if (PyDict_SetItem(scope, keys[k], v[k]) < 0) {
            Py_CLEAR(scope);
            goto done;
        }
    }
    rc = 0;
done:
    for (int k = 0; k < K_COUNT; k++) Py_XDECREF(v[k]);
    if (rc == -1) Py_RETURN_NONE;
    return scope;
}

/* the app's response headers, checked; see the top of the file */
static PyObject *response_headers(PyObject *self, PyObject *headers) {
    (void)self;
    if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)) Py_RETURN_NONE;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    Py_ssize_t size = framing;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        int is_tuple = PyTuple_CheckExact(pair);
        if ((!is_tuple && !PyList_CheckExact(pair)) || PySequence_Fast_GET_SIZE(pair) != 2)
            goto decline;
        PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
        PyObject *value = PySequence_Fast_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) goto decline;
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(name);
        Py_ssize_t nl = PyBytes_GET_SIZE(name), vl = PyBytes_GET_SIZE(value);
        if (nl == 0) goto decline;
        for (Py_ssize_t j = 0; j < nl; j++)
            if (!tchar[p[j]]) goto decline;
        p = (const unsigned char *)PyBytes_AS_STRING(value);
        for (Py_ssize_t j = 0; j < vl; j++)
            if (bad_value[p[j]]) goto decline;
        PyObject *t;
        if (is_tuple) {
            Py_INCREF(pair);
            t = pair;
        } else if ((t = PyTuple_Pack(2, name, value)) == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
        size += nl + vl + header_framing;
    }
    PyObject *result = Py_BuildValue("(Nn)", out, size);
    return result;
decline:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

/* setup(framing, header_framing): events.FRAMING and HEADER_FRAMING, for response_headers */
static PyObject *setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "setup() takes 2 arguments");
        return NULL;
    }
    Py_ssize_t a = PyLong_AsSsize_t(args[0]), b = PyLong_AsSsize_t(args[1]);
    if ((a == -1 || b == -1) && PyErr_Occurred()) return NULL;
    framing = a;
    header_framing = b;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"http_scope", (PyCFunction)(void (*)(void))http_scope, METH_FASTCALL,
     "http_scope(ev, state, root_path, frontend, asgi) -> the scope of a checked "
     "HTTP_REQUEST, or None where the Python path must decide"},
    {"response_headers", response_headers, METH_O,
     "response_headers(headers) -> (checked list of tuples, record size), or None"},
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(framing, header_framing)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar._workerapi",
    "the worker's per-request calls as C-API functions (native/worker_api.c)", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__workerapi(void) {
    static const char tokens[] = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) tchar[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) tchar[c] = tchar[c - 32] = 1;
    for (const char *t = tokens; *t; t++) tchar[(unsigned char)*t] = 1;
    bad_value['\r'] = bad_value['\n'] = bad_value[0] = 1;
    for (int k = 0; k < K_COUNT; k++)
        if ((keys[k] = PyUnicode_InternFromString(key_names[k])) == NULL) return NULL;
    s_http = PyUnicode_InternFromString("http");
    s_pathsend = PyUnicode_InternFromString("http.response.pathsend");
    s_trailers = PyUnicode_InternFromString("http.response.trailers");
    scope_plain = PyDict_New();
    scope_ext = PyDict_New();
    if (s_http == NULL || s_pathsend == NULL || s_trailers == NULL || scope_plain == NULL
            || scope_ext == NULL)
        return NULL;
    for (int k = 0; k < K_COUNT; k++) {
        if ((k < K_EXTENSIONS && PyDict_SetItem(scope_plain, keys[k], Py_None) < 0)
                || PyDict_SetItem(scope_ext, keys[k], Py_None) < 0)
            return NULL;
    }
    return PyModule_Create(&module);
}
