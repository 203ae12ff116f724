# Refilling a bytes object nobody else references (the large bodies framing.pyx and
# reassembly.pyx set aside, so a fresh one need not page-fault in): the C helpers both use.

from cpython.object cimport PyObject

cdef extern from "Python.h":
    # Takes a PyObject*: an attribute passed as ``object`` would count Cython's temporary.
    Py_ssize_t refcount "Py_REFCNT"(PyObject* o)

cdef extern from *:
    """
    /* A bytes object nobody else references may be refilled, provided its cached hash
       is forgotten.  The cache field exists (deprecated) in 3.11-3.13; elsewhere, and
       where reference counts are not exact (free-threaded, PyPy, GraalPy), bodies are
       never reused. */
    #if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) \
        && !defined(PYPY_VERSION) && !defined(GRAALVM_PYTHON)
    #  define CASTY_CAN_REUSE_BYTES 1
    static inline void casty_forget_bytes_hash(PyObject *b) {
    #  pragma GCC diagnostic push
    #  pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        ((PyBytesObject *)b)->ob_shash = -1;
    #  pragma GCC diagnostic pop
    }
    #else
    #  define CASTY_CAN_REUSE_BYTES 0
    static inline void casty_forget_bytes_hash(PyObject *b) { (void)b; }
    #endif
    """
    bint CASTY_CAN_REUSE_BYTES
    void casty_forget_bytes_hash(object b)
