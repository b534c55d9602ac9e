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
 *   parse_request(data, pos, limits, scope) -> None, False, (size, request) or
 *       (size, facts, headers, packed)
 *
 * is the C half of sidecar/http/h1.py's RequestParser._fast_head: h1_parse_request (parse and
 * pack HTTP_REQUEST, native/h1.c and events.c) on the head at data[pos:], and for the usual
 * head (no body, no upgrade, a path without '%', not one to re-scope) the Request itself,
 * built here (set_request_type); for any other head its facts (H1_NFACTS ints), its headers
 * and its packed fields (or None), and _fast_head goes on in Python.  None: incomplete or
 * declined (the Python parser decides); False: a forwarded head under rescope whose scope is
 * not known yet, which needs the cffi path (its packing waits for the caller's new scope).
 * `limits` is h1_limits_t's bytes; `scope` None (parse only) or (scheme, addrs, root,
 * rescope[, proxy]) as h1_scope_t takes it.  `proxy`, a dict or None, is what the caller
 * found for earlier forwarded heads of this connection's kind (http_conn._proxy_scope):
 * key the request's proxy fields, each "name NUL value NUL" in the head's order (proxy_key),
 * value None (the connection's own scope) or (scheme, addrs) to pack with instead.  A head
 * whose key is there is packed and made here like any other; one whose key is not: False.
 *
 *   check_all(evs) -> bool
 *
 * is sidecar/events.py's check_all (a batch of a worker's events, all of the usual kinds and
 * well-formed), for WorkerLink._on_records: once a batch.
 *
 * No state but scratch buffers: the front-end calls it from its loop's thread only, and the
 * GIL is held throughout (nothing here releases it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "events.h"
#include "h1.h"

#define OUT_CAP (1 << 16)      /* as response_whole's _RESP_CAP: a bigger response: Python */
#define FIELDS_CAP (1 << 16)

static char out_buf[OUT_CAP];
static char fields_buf[FIELDS_CAP];
static PyObject *status_lines;   /* int -> the status line, response_whole's _STATUS_LINES */
static PyObject *head_method;    /* b"HEAD" */
static PyObject *http10;         /* "1.0" */
static PyObject *http11;         /* "1.1" */
static PyTypeObject *request_type;   /* sidecar.http.h1_events.Request (a tuple) */

#define PACKED_CAP (1 << 17)     /* as h1.py's _PACKED_CAP */
static char packed_buf[PACKED_CAP];
static char head_fields[FIELDS_CAP];
static h1_head_t head = {.fields = head_fields, .fields_cap = FIELDS_CAP};

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

/* Field names and methods most requests carry, made once: a request's names are bytes
 * objects shared with every other request's instead of new ones (a browser's head has a
 * dozen fields), and its method too.  Immutable, so sharing them changes nothing a reader
 * can see. */
static const char *const common_names[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection",
    "cookie", "referer", "content-type", "content-length", "cache-control", "origin",
    "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "forwarded", "authorization",
    "upgrade-insecure-requests", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest",
    "sec-fetch-user", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "pragma",
    "if-none-match", "if-modified-since", "priority", "dnt", "te", "via",
};
#define N_COMMON_NAMES (sizeof common_names / sizeof common_names[0])
static PyObject *common_name_objs[N_COMMON_NAMES];
static const char *const common_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
};
#define N_COMMON_METHODS (sizeof common_methods / sizeof common_methods[0])
static PyObject *common_method_objs[N_COMMON_METHODS];

/* bytes of p[0:n]: the shared object when it is one of `words`, else a new one */
static PyObject *shared_bytes(const char *p, size_t n, PyObject *const *objs, size_t count) {
    for (size_t i = 0; i < count; i++) {
        PyObject *o = objs[i];
        if ((size_t)PyBytes_GET_SIZE(o) == n && memcmp(PyBytes_AS_STRING(o), p, n) == 0) {
            Py_INCREF(o);
            return o;
        }
    }
    return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
}

static int make_shared(const char *const *words, PyObject **objs, size_t count) {
    for (size_t i = 0; i < count; i++) {
        objs[i] = PyBytes_FromString(words[i]);
        if (objs[i] == NULL) return -1;
    }
    return 0;
}

/* The next field of the head's NUL-separated fields ("name NUL value NUL ..."), from *p:
 * its name and value, and *p moved past it.  -1 where no name ends before `end`. */
static int next_field(const char **p, const char *end, const char **name, size_t *name_len,
                      const char **value, size_t *value_len) {
    const char *q = memchr(*p, '\0', (size_t)(end - *p));
    if (q == NULL) return -1;
    const char *v = q + 1;
    const char *w = memchr(v, '\0', (size_t)(end - v));
    if (w == NULL) w = end;
    *name = *p;
    *name_len = (size_t)(q - *p);
    *value = v;
    *value_len = (size_t)(w - v);
    *p = w < end ? w + 1 : end;
    return 0;
}

/* headers as h1.py builds them: (name, value) pairs from the NUL-separated fields */
static PyObject *headers_list(void) {
    Py_ssize_t n = (Py_ssize_t)head.facts[H1_FIELDS];
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    const char *p = head_fields, *end = head_fields + head.facts[H1_FIELDS_LEN];
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *nm, *v;
        size_t nl, vl;
        if (next_field(&p, end, &nm, &nl, &v, &vl) < 0) goto bad;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) goto fail;
        PyList_SET_ITEM(list, i, pair);
        PyObject *name = shared_bytes(nm, nl, common_name_objs, N_COMMON_NAMES);
        if (name == NULL) goto fail;
        PyTuple_SET_ITEM(pair, 0, name);
        PyObject *value = PyBytes_FromStringAndSize(v, (Py_ssize_t)vl);
        if (value == NULL) goto fail;
        PyTuple_SET_ITEM(pair, 1, value);
    }
    return list;
bad:
    PyErr_SetString(PyExc_SystemError, "h1_parse_request: fields do not match their count");
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *bool_of(int v) {
    PyObject *b = v ? Py_True : Py_False;
    Py_INCREF(b);
    return b;
}

/* the Request of a usual head (no body, no upgrade, no '%' in its path) */
static PyObject *usual_request(const char *buf, size_t pos, PyObject *packed) {
    const int64_t *f = head.facts;
    const char *method = buf + pos, *t = buf + f[H1_METHOD_END] + 1;
    Py_ssize_t method_len = f[H1_METHOD_END] - (int64_t)pos;
    Py_ssize_t target_len = f[H1_TARGET_END] - f[H1_METHOD_END] - 1;
    Py_ssize_t path_len = f[H1_PATH_END] - f[H1_METHOD_END] - 1;
    PyObject *req = request_type->tp_alloc(request_type, 13);
    if (req == NULL) return NULL;
    PyObject *target = PyBytes_FromStringAndSize(t, target_len);
    PyTuple_SET_ITEM(req, 1, target);
    if (target == NULL) goto fail;
    PyObject *raw_path, *query;
    if (path_len == target_len) {
        Py_INCREF(target);
        raw_path = target;
        query = PyBytes_FromStringAndSize(NULL, 0);
    } else {
        raw_path = PyBytes_FromStringAndSize(t, path_len);
        query = PyBytes_FromStringAndSize(t + path_len + 1, target_len - path_len - 1);
    }
    PyTuple_SET_ITEM(req, 3, raw_path);
    PyTuple_SET_ITEM(req, 4, query);
    if (raw_path == NULL || query == NULL) goto fail;
    PyObject *m = shared_bytes(method, (size_t)method_len, common_method_objs,
                               N_COMMON_METHODS);
    PyTuple_SET_ITEM(req, 0, m);
    PyObject *path = PyUnicode_DecodeLatin1(t, path_len, NULL);
    PyTuple_SET_ITEM(req, 2, path);
    PyObject *version = f[H1_MINOR] ? http11 : http10;
    Py_INCREF(version);
    PyTuple_SET_ITEM(req, 5, version);
    PyObject *headers = headers_list();
    PyTuple_SET_ITEM(req, 6, headers);
    if (m == NULL || path == NULL || headers == NULL) goto fail;
    PyTuple_SET_ITEM(req, 7, bool_of(f[H1_KEEP_ALIVE] == 1));
    PyTuple_SET_ITEM(req, 8, bool_of(f[H1_EXPECT_CONTINUE] == 1));
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(req, 9, Py_None);
    PyObject *length = f[H1_CONTENT_LENGTH] < 0 ? (Py_INCREF(Py_None), Py_None)
                                                : PyLong_FromLongLong(f[H1_CONTENT_LENGTH]);
    PyTuple_SET_ITEM(req, 10, length);
    if (length == NULL) goto fail;
    PyTuple_SET_ITEM(req, 11, bool_of(0));
    Py_INCREF(packed);
    PyTuple_SET_ITEM(req, 12, packed);
    return req;
fail:   /* (the tuple's unset items are NULL: its dealloc skips them) */
    Py_DECREF(req);
    return NULL;
}

/* The proxy fields of the head just parsed (Forwarded, X-Forwarded-For, X-Forwarded-Proto),
 * each "name NUL value NUL" in the head's order, as bytes: parse_request's key into the
 * caller's proxy dict (http_conn._proxy_scope builds the same bytes from the headers list).
 * NULL with no exception: over the buffer (the caller declines). */
#define PROXY_KEY_CAP 4096
static PyObject *proxy_key(void) {
    static char key[PROXY_KEY_CAP];
    size_t n = 0;
    Py_ssize_t count = (Py_ssize_t)head.facts[H1_FIELDS];
    const char *p = head_fields, *end = head_fields + head.facts[H1_FIELDS_LEN];
    for (Py_ssize_t i = 0; i < count && p < end; i++) {
        const char *nm, *v;
        size_t nl, vl;
        if (next_field(&p, end, &nm, &nl, &v, &vl) < 0) return NULL;
        if ((nl == 9 && !memcmp(nm, "forwarded", 9))
                || (nl == 15 && !memcmp(nm, "x-forwarded-for", 15))
                || (nl == 17 && !memcmp(nm, "x-forwarded-proto", 17))) {
            if (n + nl + vl + 2 > PROXY_KEY_CAP) return NULL;
            memcpy(key + n, nm, nl);
            key[n + nl] = '\0';
            memcpy(key + n + nl + 1, v, vl);
            key[n + nl + 1 + vl] = '\0';
            n += nl + vl + 2;
        }
    }
    return PyBytes_FromStringAndSize(key, (Py_ssize_t)n);
}

/* A forwarded head under rescope: packed with the scope the caller's proxy dict holds for
 * its proxy fields.  1 packed (facts[H1_PACKED] set), 0 not known (or not packable), -1
 * error. */
static int pack_forwarded(const char *buf, size_t pos, PyObject *proxy, const h1_scope_t *sc) {
    PyObject *key = proxy_key();
    if (key == NULL) return PyErr_Occurred() ? -1 : 0;
    PyObject *mine = PyDict_GetItemWithError(proxy, key);   /* borrowed */
    Py_DECREF(key);
    if (mine == NULL) return PyErr_Occurred() ? -1 : 0;
    const char *scheme = sc->scheme, *addrs = sc->addrs;
    size_t scheme_len = sc->scheme_len, addrs_len = sc->addrs_len;
    if (mine != Py_None) {
        if (!PyTuple_CheckExact(mine) || PyTuple_GET_SIZE(mine) != 2
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(mine, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(mine, 1)))
            return 0;
        scheme = PyBytes_AS_STRING(PyTuple_GET_ITEM(mine, 0));
        scheme_len = (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(mine, 0));
        addrs = PyBytes_AS_STRING(PyTuple_GET_ITEM(mine, 1));
        addrs_len = (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(mine, 1));
    }
    int64_t n = h1_pack_request(buf, pos, &head, scheme, scheme_len, addrs, addrs_len,
                                sc->root, sc->root_len, packed_buf, PACKED_CAP);
    if (n <= 0) return 0;
    head.facts[H1_PACKED] = n;
    return 1;
}

static PyObject *parse_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_request() takes 4 arguments");
        return NULL;
    }
    PyObject *data = args[0], *limits = args[2], *scope = args[3];
    if (request_type == NULL || !PyBytes_CheckExact(data) || !PyBytes_CheckExact(limits)
            || PyBytes_GET_SIZE(limits) != (Py_ssize_t)sizeof(h1_limits_t)) {
        PyErr_SetString(PyExc_TypeError, "parse_request(bytes, int, limits bytes, scope)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > len) {
        PyErr_SetString(PyExc_ValueError, "parse_request: pos out of range");
        return NULL;
    }
    h1_limits_t lim;
    memcpy(&lim, PyBytes_AS_STRING(limits), sizeof lim);
    h1_scope_t sc, *scp = NULL;
    PyObject *proxy = NULL;   /* the caller's proxy dict (borrowed), or NULL */
    if (scope != Py_None) {
        if (!PyTuple_CheckExact(scope)
                || (PyTuple_GET_SIZE(scope) != 4 && PyTuple_GET_SIZE(scope) != 5)
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(scope, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(scope, 1))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(scope, 2))) {
            PyErr_SetString(PyExc_TypeError,
                            "parse_request: scope is (bytes, bytes, bytes, flag[, dict])");
            return NULL;
        }
        if (PyTuple_GET_SIZE(scope) == 5 && PyTuple_GET_ITEM(scope, 4) != Py_None) {
            proxy = PyTuple_GET_ITEM(scope, 4);
            if (!PyDict_CheckExact(proxy)) {
                PyErr_SetString(PyExc_TypeError, "parse_request: scope's proxy is a dict");
                return NULL;
            }
        }
        PyObject *s0 = PyTuple_GET_ITEM(scope, 0), *s1 = PyTuple_GET_ITEM(scope, 1),
                 *s2 = PyTuple_GET_ITEM(scope, 2);
        int rescope = PyObject_IsTrue(PyTuple_GET_ITEM(scope, 3));
        if (rescope < 0) return NULL;
        sc = (h1_scope_t){PyBytes_AS_STRING(s0), (size_t)PyBytes_GET_SIZE(s0),
                          PyBytes_AS_STRING(s1), (size_t)PyBytes_GET_SIZE(s1),
                          PyBytes_AS_STRING(s2), (size_t)PyBytes_GET_SIZE(s2), rescope};
        scp = &sc;
    }
    const char *buf = PyBytes_AS_STRING(data);
    int64_t size = h1_parse_request(buf, (size_t)pos, (size_t)len, &lim, &head, scp,
                                    packed_buf, PACKED_CAP);
    if (size <= 0) Py_RETURN_NONE;
    const int64_t *f = head.facts;
    if (f[H1_PACKED] < 0 && f[H1_FORWARDED] && scp != NULL && scp->rescope) {
        int known = proxy == NULL ? 0 : pack_forwarded(buf, (size_t)pos, proxy, scp);
        if (known < 0) return NULL;
        if (!known) Py_RETURN_FALSE;
    }
    PyObject *packed;
    if (f[H1_PACKED] >= 0) {
        packed = PyBytes_FromStringAndSize(packed_buf, (Py_ssize_t)f[H1_PACKED]);
        if (packed == NULL) return NULL;
    } else {
        Py_INCREF(Py_None);
        packed = Py_None;
    }
    PyObject *sz = PyLong_FromLongLong(size), *result = NULL;
    if (sz == NULL) goto done;
    if (f[H1_CONTENT_LENGTH] <= 0 && f[H1_CHUNKED] != 1 && f[H1_UPGRADE_START] < 0
            && !f[H1_PATH_PERCENT]) {
        PyObject *req = usual_request(buf, (size_t)pos, packed);
        if (req != NULL) result = PyTuple_Pack(2, sz, req);
        Py_XDECREF(req);
        goto done;
    }
    PyObject *facts = PyTuple_New(H1_NFACTS);
    if (facts == NULL) goto done;
    for (int i = 0; i < H1_NFACTS; i++) {
        PyObject *v = PyLong_FromLongLong(f[i]);
        if (v == NULL) {
            Py_DECREF(facts);
            goto done;
        }
        PyTuple_SET_ITEM(facts, i, v);
    }
    PyObject *headers = headers_list();
    if (headers != NULL) result = PyTuple_Pack(4, sz, facts, headers, packed);
    Py_DECREF(facts);
    Py_XDECREF(headers);
done:
    Py_XDECREF(sz);
    Py_DECREF(packed);
    return result;
}

/* set_request_type(Request): the tuple type parse_request's usual heads are made of */
static PyObject *set_request_type(PyObject *self, PyObject *t) {
    (void)self;
    if (!PyType_Check(t) || !PyType_IsSubtype((PyTypeObject *)t, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "set_request_type() takes a tuple type");
        return NULL;
    }
    Py_INCREF(t);
    Py_XSETREF(request_type, (PyTypeObject *)t);
    Py_RETURN_NONE;
}

/* limits_size(): sizeof(h1_limits_t), the length of parse_request's limits */
static PyObject *limits_size(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(sizeof(h1_limits_t));
}

/* check_all(evs) -> bool: sidecar/events.py's check_all, its twin (the same tests, in the
 * same order of kinds): whether every event of a batch from a worker is one of the kinds of
 * every request or message, well-formed.  False also for anything it is not sure of (an
 * event that is not a list, a kind that is not an int): the front-end then checks event by
 * event with events.check, which says what is wrong.  The kinds are docs/protocol.md's
 * (tests/http/test_response_head.py compares the two on a corpus). */
enum { K_HTTP_BODY = 2, K_WS_RECEIVE = 5, K_RESPONSE_START = 33, K_RESPONSE_BODY = 34,
       K_WS_SEND = 37, K_APP_DONE = 39 };

static int is_bool(PyObject *o) { return o == Py_True || o == Py_False; }

static PyObject *check_all(PyObject *self, PyObject *evs) {
    (void)self;
    if (!PyList_CheckExact(evs)) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(evs); i++) {
        PyObject *ev = PyList_GET_ITEM(evs, i);
        if (!PyList_CheckExact(ev) || PyList_GET_SIZE(ev) < 3) Py_RETURN_FALSE;
        PyObject *kind_obj = PyList_GET_ITEM(ev, 0);
        if (!PyLong_CheckExact(kind_obj)) Py_RETURN_FALSE;
        int overflow = 0;
        long kind = PyLong_AsLongAndOverflow(kind_obj, &overflow);
        if (overflow || (kind == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        Py_ssize_t n = PyList_GET_SIZE(ev);
        PyObject *a = PyList_GET_ITEM(ev, 2);
        if (kind == K_RESPONSE_BODY || kind == K_HTTP_BODY) {
            if (n == 4 && PyBytes_CheckExact(a) && is_bool(PyList_GET_ITEM(ev, 3))) continue;
        } else if (kind == K_APP_DONE) {
            if (n == 3 && (a == Py_None || PyUnicode_CheckExact(a))) continue;
        } else if (kind == K_RESPONSE_START) {
            if (n == 5 && PyLong_CheckExact(a) && is_bool(PyList_GET_ITEM(ev, 4))
                    && PyList_CheckExact(PyList_GET_ITEM(ev, 3))) {
                PyObject *headers = PyList_GET_ITEM(ev, 3);
                for (Py_ssize_t j = 0; j < PyList_GET_SIZE(headers); j++) {
                    PyObject *pair = PyList_GET_ITEM(headers, j);
                    if (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2
                            || !PyBytes_CheckExact(PyList_GET_ITEM(pair, 0))
                            || !PyBytes_CheckExact(PyList_GET_ITEM(pair, 1)))
                        Py_RETURN_FALSE;
                }
                continue;
            }
        } else if (kind == K_WS_SEND || kind == K_WS_RECEIVE) {
            if (n == 4 && (PyBytes_CheckExact(a) || PyUnicode_CheckExact(a))
                    && is_bool(PyList_GET_ITEM(ev, 3)))
                continue;
        }
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"check_all", check_all, METH_O,
     "check_all(evs) -> bool: sidecar.events.check_all's C twin (False: check each event)"},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, pos, limits, scope[+proxy]) -> None, False, (size, Request) or "
     "(size, facts, headers, packed)"},
    {"set_request_type", set_request_type, METH_O, "set_request_type(Request)"},
    {"limits_size", limits_size, METH_NOARGS, "sizeof(h1_limits_t)"},
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
    http10 = PyUnicode_InternFromString("1.0");
    http11 = PyUnicode_InternFromString("1.1");
    if (head_method == NULL || http10 == NULL || http11 == NULL) return NULL;
    if (make_shared(common_names, common_name_objs, N_COMMON_NAMES) < 0
            || make_shared(common_methods, common_method_objs, N_COMMON_METHODS) < 0)
        return NULL;
    return PyModule_Create(&module);
}
