/* sidecar._wsapi: the front-end's per-message WebSocket calls as CPython C-API functions, the
 * C twins of sidecar/http/ws_frames.py's plain_frames and server_frame (the fast path of
 * ws_connection.WSConnection: whole plain messages in, whole messages out).  The Python
 * functions stay the definition of the behaviour: SIDECAR_NO_SPEEDUPS=1 selects them, and
 * tests/http/test_ws_frames.py compares the two on a corpus.
 *
 *   plain_frames(data, pos, max_frame) -> (list, pos)
 *
 * From data[pos] (bytes or bytearray), every whole frame that is a plain message -- FIN, no
 * RSV bits, TEXT or BINARY, masked, a payload of at most max_frame bytes -- unmasked, a TEXT
 * one decoded as strict UTF-8, in order; it stops at the first frame that is not one, is not
 * all there yet, or is TEXT that is not UTF-8 (the caller hands that one to websockets, which
 * fails it).  Returns the messages (str or bytes) and the offset of the first byte not taken.
 *
 *   server_frame(payload, text) -> bytes
 *
 * One unmasked frame holding a whole message, as websockets serializes it (RFC 6455 5.2).
 *
 * The GIL is held throughout; nothing here keeps state between calls. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* payload[i] ^= key[i % 4], word at a time where it can */
static void unmask(unsigned char *dst, const unsigned char *src, Py_ssize_t n,
                   const unsigned char key[4]) {
    Py_ssize_t i = 0;
    uint64_t k8;
    unsigned char k[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    memcpy(&k8, k, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k8;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

static PyObject *plain_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "plain_frames(data, pos, max_frame)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    long long max_frame = PyLong_AsLongLong(args[2]);
    if (max_frame == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t end = view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    if (pos < 0)
        pos = end;   /* (never asked: nothing taken) */
    while (end - pos >= 6) {   /* the smallest masked frame: 2 + 4 bytes */
        unsigned char b0 = data[pos], b1 = data[pos + 1];
        if ((b0 != 0x81 && b0 != 0x82) || !(b1 & 0x80))
            break;
        uint64_t n = b1 & 0x7F;
        Py_ssize_t size = 6;
        if (n == 126) {
            if (end - pos < 8)
                break;
            n = ((uint64_t)data[pos + 2] << 8) | data[pos + 3];
            size = 8;
        } else if (n == 127) {
            if (end - pos < 14)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | data[pos + 2 + i];
            size = 14;
        }
        if (max_frame < 0 || n > (uint64_t)max_frame || n > (uint64_t)(end - pos - size))
            break;   /* too big for the fast path, or not all here yet */
        const unsigned char *key = data + pos + size - 4;
        const unsigned char *src = data + pos + size;
        Py_ssize_t len = (Py_ssize_t)n;
        PyObject *msg = PyBytes_FromStringAndSize(NULL, len);
        if (msg == NULL)
            goto fail;
        unmask((unsigned char *)PyBytes_AS_STRING(msg), src, len, key);
        if (b0 == 0x81) {
            PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(msg), len, "strict");
            Py_DECREF(msg);
            if (text == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    goto fail;
                PyErr_Clear();   /* not UTF-8: the caller fails it as websockets does */
                break;
            }
            msg = text;
        }
        int r = PyList_Append(out, msg);
        Py_DECREF(msg);
        if (r < 0)
            goto fail;
        pos += size + len;
    }
    PyBuffer_Release(&view);
    PyObject *at = PyLong_FromSsize_t(pos);
    if (at == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, out, at);
    Py_DECREF(out);
    Py_DECREF(at);
    return result;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *server_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "server_frame(payload: bytes, text)");
        return NULL;
    }
    int text = PyObject_IsTrue(args[1]);
    if (text < 0)
        return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    unsigned char head[10];
    Py_ssize_t size;
    head[0] = text ? 0x81 : 0x82;
    if (n < 126) {
        head[1] = (unsigned char)n;
        size = 2;
    } else if (n < 65536) {
        head[1] = 126;
        head[2] = (unsigned char)(n >> 8);
        head[3] = (unsigned char)n;
        size = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++)
            head[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        size = 10;
    }
    PyObject *frame = PyBytes_FromStringAndSize(NULL, size + n);
    if (frame == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(frame);
    memcpy(p, head, size);
    memcpy(p + size, PyBytes_AS_STRING(args[0]), n);
    return frame;
}

static PyMethodDef methods[] = {
    {"plain_frames", (PyCFunction)(void (*)(void))plain_frames, METH_FASTCALL,
     "plain_frames(data, pos, max_frame) -> (messages, pos)"},
    {"server_frame", (PyCFunction)(void (*)(void))server_frame, METH_FASTCALL,
     "server_frame(payload, text) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar._wsapi",
    "The WebSocket frame fast path's per-message calls in C (native/ws_api.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__wsapi(void) {
    return PyModule_Create(&module);
}
