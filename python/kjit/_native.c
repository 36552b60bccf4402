/* kjit._native: the Python package's calls into libkjit.so's C ABI, in C so that a call costs
   about what the C++ call does (docs/perf.md, issue 18: through ctypes, describing a tensor and
   converting the arguments cost 1-2 us each on the GPU machine).

   - Tensors reach kjit as DLTensors filled by torch itself through DLPack's C exchange table
     (torch.Tensor.__dlpack_c_exchange_api__, DLPack 1.3), on this call's stack: no export object,
     no capsule. Anything the table does not take (a meta tensor, the CPU tests' stand-ins) goes
     to the package's Python description (kjit._dlpack.DLArgs), so kjit still names it.
   - An entry point is called through libffi (what ctypes uses) from a signature written once as
     a string of argument kinds (kjit._library), so this file knows no entry point.
   - launch() adds torch's current stream of the anchor tensor's device, through the same table,
     and a failed call raises kjit's error: an op's call is one C function from Python.
   - host_copy() checks a host copy kjit validates (int32, contiguous, on the host, the device
     copy's shape), and run() is an op's eager path (kjit._launch.Op): the check that torch's
     dispatcher would only pass the call through (direct()), the implementation, the outputs'
     version counters. Cheaper than their Python forms.

   Built by `pip install ./python` against the limited API (one binary for CPython >= 3.11). */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlpack/dlpack.h>
#include <ffi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* DLPack 1.3's exchange table (DLPack >= 1.3's dlpack.h; the system's may be older, with the same
   DLTensor). Only `describe` and `current_stream` are used: outputs are allocated by torch in
   Python, since a tensor made by the table's allocator is a DLPack import, whose storage torch's
   caching allocator does not own (record_stream would be ignored on it). */
typedef struct {
  struct {
    uint32_t major, minor;
  } version;
  void* prev_api;
  void* allocate;
  void* managed_from_object;
  void* managed_to_object;
  int (*describe)(void* py_object, DLTensor* out);                      /* may be NULL */
  int (*current_stream)(DLDeviceType type, int32_t device, void** out); /* may be NULL */
} ExchangeApi;

enum { kMaxArgs = 24 };

/* What bind() was given: the table, torch.Tensor, the Python description of what the table does
   not take (a DLArgs factory), kjit's InvalidArgumentError, the entries by name (kjit._library's
   dict, filled by `load` when libkjit.so is loaded), `fail(name, status)` that raises kjit's
   error, torch's query of the current CUDA device, and `launch_on` (kjit._library's launch on
   another device than the current one). */
static const ExchangeApi* exchange;
static PyTypeObject* tensor_type;
static PyObject *python_describer, *invalid_argument;
static PyObject *entries, *load, *fail;
static PyObject *get_device, *launch_on;
static PyObject *requires_grad_name, *is_cuda_name, *dtype_name, *device_name, *shape_name;

/* One entry point: its address, its argument kinds and the ffi call description built from them.
   Kinds: 't' const DLTensor* (a tensor, a DLTensor's int address, or None: NULL), 'p' a pointer
   (None, an int address, or an object with a buffer: bytes, a ctypes instance), 'i' int32, 'l'
   int64, 'z' size_t, 'f' float. The return is 'i' (kjit_status) or 'l' (int64). */
typedef struct {
  void (*function)(void);
  ffi_cif cif;
  ffi_type* types[kMaxArgs];
  char kinds[kMaxArgs + 1];
  char result;
  char name[64];
} Entry;

static ffi_type* ffi_type_of(char kind) {
  switch (kind) {
    case 't':
    case 'p':
      return &ffi_type_pointer;
    case 'i':
      return &ffi_type_sint32;
    case 'l':
      return &ffi_type_sint64;
    case 'z':
      return sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32;
    case 'f':
      return &ffi_type_float;
    default:
      return NULL;
  }
}

static void entry_free(PyObject* capsule) {
  PyMem_Free(PyCapsule_GetPointer(capsule, "kjit.entry"));
}

/* entry(address, result_kind, argument_kinds, name) -> an opaque entry for call(). */
static PyObject* entry(PyObject* self, PyObject* args) {
  (void)self;
  PyObject* address;
  const char *result, *kinds, *name;
  if (!PyArg_ParseTuple(args, "Osss", &address, &result, &kinds, &name)) return NULL;
  const size_t count = strlen(kinds);
  if (count > kMaxArgs || strlen(result) != 1 || strchr("il", result[0]) == NULL) {
    return PyErr_Format(PyExc_ValueError, "%s: unsupported signature %s(%s)", name, result, kinds);
  }
  Entry* e = PyMem_Calloc(1, sizeof(Entry));
  if (e == NULL) return PyErr_NoMemory();
  e->function = (void (*)(void))PyLong_AsVoidPtr(address);
  int bad_kind = 0;
  for (size_t i = 0; i < count; ++i) {
    e->types[i] = ffi_type_of(kinds[i]);
    bad_kind |= e->types[i] == NULL;
  }
  memcpy(e->kinds, kinds, count);
  e->result = result[0];
  snprintf(e->name, sizeof e->name, "%s", name);
  if (PyErr_Occurred() || e->function == NULL || bad_kind ||
      ffi_prep_cif(&e->cif, FFI_DEFAULT_ABI, (unsigned)count,
                   e->result == 'l' ? &ffi_type_sint64 : &ffi_type_sint32, e->types) != FFI_OK) {
    PyMem_Free(e);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: bad entry (%s)", name, kinds);
    return NULL;
  }
  PyObject* capsule = PyCapsule_New(e, "kjit.entry", entry_free);
  if (capsule == NULL) PyMem_Free(e);
  return capsule;
}

/* One argument's storage for the call. Errors count arguments from 1, as ctypes' do. */
typedef union {
  void* p;
  int32_t i;
  int64_t l;
  size_t z;
  float f;
} Slot;

static int refuse(const Entry* e, Py_ssize_t index, const char* expected, PyObject* got) {
  PyObject* type = PyType_GetName(Py_TYPE(got));
  if (type != NULL) {
    PyErr_Format(invalid_argument, "%s: argument %zd must be %s, got %U", e->name, index + 1,
                 expected, type);
    Py_DECREF(type);
  }
  return -1;
}

/* A tensor argument as a DLTensor*: through torch's table where it takes it, else through the
   Python description (created once a call, in *describer; its DLTensors live as long as it). */
static int tensor_arg(const Entry* e, Py_ssize_t index, PyObject* arg, DLTensor* tensor,
                      PyObject** describer, void** out) {
  if (arg == Py_None) {
    *out = NULL;
    return 0;
  }
  if (PyLong_Check(arg)) { /* a DLTensor described already (kjit._dlpack.DLArgs) */
    *out = PyLong_AsVoidPtr(arg);
    return PyErr_Occurred() ? -1 : 0;
  }
  if (PyObject_TypeCheck(arg, tensor_type) && exchange->describe(arg, tensor) == 0) {
    *out = tensor;
    return 0;
  }
  PyErr_Clear(); /* what the table refused (a meta tensor) is described in Python */
  if (*describer == NULL && (*describer = PyObject_CallNoArgs(python_describer)) == NULL) return -1;
  PyObject* name = PyUnicode_FromFormat("%s argument %zd", e->name, index + 1);
  if (name == NULL) return -1;
  PyObject* address = PyObject_CallFunctionObjArgs(*describer, arg, name, NULL);
  Py_DECREF(name);
  if (address == NULL) return -1;
  *out = address == Py_None ? NULL : PyLong_AsVoidPtr(address);
  Py_DECREF(address);
  return PyErr_Occurred() ? -1 : 0;
}

/* The entry for call()'s and launch()'s first argument: an entry's name (loading libkjit.so on
   first use) or an entry itself. */
static const Entry* entry_of(PyObject* key) {
  if (!PyUnicode_Check(key)) return PyCapsule_GetPointer(key, "kjit.entry");
  PyObject* found = PyDict_GetItemWithError(entries, key);
  if (found == NULL && !PyErr_Occurred()) {
    PyObject* loaded = PyObject_CallNoArgs(load);
    if (loaded == NULL) return NULL;
    Py_DECREF(loaded);
    found = PyDict_GetItemWithError(entries, key);
    if (found == NULL && !PyErr_Occurred())
      PyErr_Format(PyExc_KeyError, "kjit has no entry %R", key);
  }
  return found == NULL ? NULL : PyCapsule_GetPointer(found, "kjit.entry");
}

/* Calls `e` with the `count` Python arguments `args`, then `stream` where `with_stream`, and
   returns its result: an int64 (result 'l'), else None, or kjit's error raised through fail(). */
static PyObject* invoke(const Entry* e, PyObject* const* args, Py_ssize_t nargs, int with_stream,
                        void* stream) {
  const Py_ssize_t count = (Py_ssize_t)strlen(e->kinds);
  if (nargs + with_stream != count || (with_stream && e->kinds[count - 1] != 'p')) {
    return PyErr_Format(invalid_argument, "%s takes %zd arguments, got %zd", e->name,
                        count - with_stream, nargs);
  }
  Slot slots[kMaxArgs];
  void* values[kMaxArgs];
  DLTensor tensors[kMaxArgs];
  Py_buffer buffers[kMaxArgs];
  int buffered[kMaxArgs] = {0};
  PyObject* describer = NULL;
  PyObject* result = NULL;
  Py_ssize_t i = 0;
  for (; i < nargs; ++i) {
    PyObject* arg = args[i];
    Slot* slot = &slots[i];
    values[i] = slot;
    switch (e->kinds[i]) {
      case 't':
        if (tensor_arg(e, i, arg, &tensors[i], &describer, &slot->p) != 0) goto done;
        break;
      case 'p':
        if (arg == Py_None) {
          slot->p = NULL;
        } else if (PyLong_Check(arg)) {
          slot->p = PyLong_AsVoidPtr(arg);
        } else if (PyObject_CheckBuffer(arg) &&
                   PyObject_GetBuffer(arg, &buffers[i], PyBUF_SIMPLE) == 0) {
          buffered[i] = 1;
          slot->p = buffers[i].buf;
        } else {
          PyErr_Clear();
          refuse(e, i, "an address, None or a buffer", arg);
          goto done;
        }
        break;
      case 'i':
      case 'l':
      case 'z': {
        if (!PyLong_Check(arg)) {
          refuse(e, i, "an int", arg);
          goto done;
        }
        const long long value = PyLong_AsLongLong(arg);
        if (value == -1 && PyErr_Occurred()) goto done;
        if ((e->kinds[i] == 'i' && (value < INT32_MIN || value > INT32_MAX)) ||
            (e->kinds[i] == 'z' && value < 0)) {
          PyErr_Format(invalid_argument, "%s: argument %zd is out of range (%lld)", e->name, i + 1,
                       value);
          goto done;
        }
        if (e->kinds[i] == 'i') slot->i = (int32_t)value;
        if (e->kinds[i] == 'l') slot->l = value;
        if (e->kinds[i] == 'z') slot->z = (size_t)value;
        break;
      }
      case 'f': {
        if (!PyFloat_Check(arg) && !PyLong_Check(arg)) {
          refuse(e, i, "a float", arg);
          goto done;
        }
        const double value = PyFloat_AsDouble(arg);
        if (value == -1.0 && PyErr_Occurred()) goto done;
        slot->f = (float)value;
        break;
      }
    }
  }
  if (with_stream) {
    slots[count - 1].p = stream;
    values[count - 1] = &slots[count - 1];
  }
  {
    int64_t returned = 0; /* libffi widens a narrower result to a full register (ffi_arg) */
    ffi_call((ffi_cif*)&e->cif, e->function, &returned, values);
    if (e->result == 'l') {
      result = PyLong_FromLongLong(returned);
    } else if ((int32_t)returned == 0) {
      result = Py_NewRef(Py_None);
    } else { /* fail() raises kjit's error with kjit's message */
      result = PyObject_CallFunction(fail, "si", e->name, (int)(int32_t)returned);
    }
  }
done:
  for (Py_ssize_t b = 0; b < i; ++b) {
    if (buffered[b]) PyBuffer_Release(&buffers[b]);
  }
  Py_XDECREF(describer);
  return result;
}

/* call(name, *args) -> None, or the int64 an 'l' entry point returns; kjit's error on failure.
   `name` may be an entry itself (a test's). */
static PyObject* call(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (nargs < 1) return PyErr_Format(PyExc_TypeError, "call(name, *args)");
  const Entry* e = entry_of(args[0]);
  return e == NULL ? NULL : invoke(e, args + 1, nargs - 1, 0, NULL);
}

/* launch(name, anchor, *args): call(name, *args, stream) with torch's current stream of the
   CUDA device of tensor `anchor` (NULL where `anchor` is not a CUDA tensor: kjit refuses such an
   argument by its device first). kjit launches in the current CUDA context, so a call whose
   anchor is on another device than the current one goes to `launch_on(device, name, anchor,
   *args)`, which makes it current (torch.cuda.device) and comes back here. */
static PyObject* launch(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (nargs < 2) return PyErr_Format(PyExc_TypeError, "launch(name, anchor, *args)");
  const Entry* e = entry_of(args[0]);
  if (e == NULL) return NULL;
  DLTensor anchor;
  if (!PyObject_TypeCheck(args[1], tensor_type) || exchange->describe(args[1], &anchor) != 0 ||
      anchor.device.device_type != kDLCUDA) {
    PyErr_Clear();
    return invoke(e, args + 2, nargs - 2, 1, NULL);
  }
  PyObject* current = PyObject_CallNoArgs(get_device);
  if (current == NULL) return NULL;
  const long device = PyLong_AsLong(current);
  Py_DECREF(current);
  if (device == -1 && PyErr_Occurred()) return NULL;
  if (device != anchor.device.device_id) {
    PyObject* call_args = PyTuple_New(nargs + 1);
    if (call_args == NULL) return NULL;
    PyTuple_SetItem(call_args, 0, PyLong_FromLong(anchor.device.device_id));
    for (Py_ssize_t a = 0; a < nargs; ++a)
      PyTuple_SetItem(call_args, a + 1, Py_NewRef(args[a]));
    PyObject* result = PyErr_Occurred() ? NULL : PyObject_Call(launch_on, call_args, NULL);
    Py_DECREF(call_args);
    return result;
  }
  void* stream = NULL;
  if (exchange->current_stream(kDLCUDA, anchor.device.device_id, &stream) != 0) return NULL;
  return invoke(e, args + 2, nargs - 2, 1, stream);
}

/* Raises InvalidArgumentError "`what` `rule`, got `got`" (`got` a new reference, consumed; NULL:
   its error stands). */
static PyObject* refuse_host_copy(PyObject* what, const char* rule, PyObject* got) {
  if (got != NULL) {
    PyErr_Format(invalid_argument, "%U %s, got %S", what, rule, got);
    Py_DECREF(got);
  }
  return NULL;
}

/* The "[2, 3]" of a tensor's shape (a new reference). */
static PyObject* shape_list(PyObject* t) {
  PyObject* shape = PyObject_GetAttr(t, shape_name);
  if (shape == NULL) return NULL;
  PyObject* list = PySequence_List(shape);
  Py_DECREF(shape);
  return list;
}

/* host_copy(host, device_copy, what) -> the address of `host`, the host copy of the int32 tensor
   `device_copy` that kjit validates on the host (so that no call synchronises with the device):
   a contiguous int32 torch tensor on the host of the device copy's shape (kjit reads as many
   entries as the device copy has). */
static PyObject* host_copy(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 3 || !PyUnicode_Check(args[2])) {
    return PyErr_Format(PyExc_TypeError, "host_copy(host, device_copy, what)");
  }
  PyObject *host = args[0], *device_copy = args[1], *what = args[2];
  DLTensor h;
  int ok = PyObject_TypeCheck(host, tensor_type) && exchange->describe(host, &h) == 0;
  if (!ok) PyErr_Clear();           /* what the table refused is named below */
  int64_t compact = 1, strided = 0; /* as torch's is_contiguous(): NULL strides are compact */
  for (int d = ok ? h.ndim - 1 : -1; d >= 0; --d) {
    strided |= h.strides != NULL && h.shape[d] != 1 && h.strides[d] != compact;
    compact *= h.shape[d];
  }
  ok &= !strided || compact == 0;
  if (!ok || h.device.device_type != kDLCPU || h.dtype.code != kDLInt || h.dtype.bits != 32 ||
      h.dtype.lanes != 1) {
    const char* rule = "must be a contiguous int32 tensor on the host";
    if (!PyObject_TypeCheck(host, tensor_type)) {
      return refuse_host_copy(what, rule, PyType_GetName(Py_TYPE(host)));
    }
    PyObject* dtype = PyObject_GetAttr(host, dtype_name);
    PyObject* device = dtype == NULL ? NULL : PyObject_GetAttr(host, device_name);
    PyObject* got = device == NULL ? NULL : PyUnicode_FromFormat("%S on %S", dtype, device);
    Py_XDECREF(dtype);
    Py_XDECREF(device);
    return refuse_host_copy(what, rule, got);
  }
  DLTensor d;
  int same =
      PyObject_TypeCheck(device_copy, tensor_type) && exchange->describe(device_copy, &d) == 0;
  if (same) {
    same = d.ndim == h.ndim && memcmp(d.shape, h.shape, sizeof(int64_t) * (size_t)h.ndim) == 0;
  } else { /* what the table does not take (a meta tensor, a stand-in): by its shape attribute */
    PyErr_Clear();
    PyObject *expected = shape_list(device_copy), *got = shape_list(host);
    same = expected == NULL || got == NULL ? -1 : PyObject_RichCompareBool(expected, got, Py_EQ);
    Py_XDECREF(expected);
    Py_XDECREF(got);
    if (same < 0) return NULL;
  }
  if (!same) {
    PyObject* expected = shape_list(device_copy);
    if (expected == NULL) return NULL;
    PyObject* rule = PyUnicode_FromFormat("must have the device copy's shape %S", expected);
    Py_DECREF(expected);
    if (rule == NULL) return NULL;
    PyObject* result =
        refuse_host_copy(what, PyUnicode_AsUTF8AndSize(rule, NULL), shape_list(host));
    Py_DECREF(rule);
    return result;
  }
  return PyLong_FromVoidPtr((char*)h.data + h.byte_offset);
}

/* Whether `answer` (a torch query's) is None or false; -1 on an error. */
static int is_quiet(PyObject* answer) {
  if (answer == NULL) return -1;
  const int quiet = answer == Py_None ? 1 : !PyObject_IsTrue(answer);
  Py_DECREF(answer);
  return quiet;
}

/* A tensor argument of direct(): 1 where it allows the direct path, 0 where not, -1 on error. */
static int direct_tensor(PyObject* t, int grad, PyObject** anchor) {
  if (Py_TYPE(t) != tensor_type) return 0; /* a subclass (fake, functional, Parameter) dispatches */
  if (grad) {
    const int requires = is_quiet(PyObject_GetAttr(t, requires_grad_name));
    if (requires <= 0) return requires;
  }
  if (*anchor == NULL) *anchor = t;
  return 1;
}

/* Whether `args` may go straight to an op's implementation (kjit._launch.Op's checks past
   torch.compiler.is_compiling()): every one of `queries` (torch's, called without arguments)
   answers None or a false value, and `args` are as direct_tensor() allows, one of them on CUDA.
   1 yes, 0 no, -1 on error. */
static int direct_args(PyObject* queries, PyObject* grad_enabled, PyObject* args) {
  const Py_ssize_t count = PyTuple_Size(queries);
  for (Py_ssize_t q = 0; q < count; ++q) {
    const int quiet = is_quiet(PyObject_CallNoArgs(PyTuple_GetItem(queries, q)));
    if (quiet <= 0) return quiet;
  }
  PyObject* grad_answer = PyObject_CallNoArgs(grad_enabled);
  if (grad_answer == NULL) return -1;
  const int grad = PyObject_IsTrue(grad_answer);
  Py_DECREF(grad_answer);
  PyObject* anchor = NULL;
  const Py_ssize_t n = PyTuple_Size(args);
  for (Py_ssize_t a = 0; a < n; ++a) {
    PyObject* arg = PyTuple_GetItem(args, a);
    if (PyList_Check(arg) || PyTuple_Check(arg)) {
      const Py_ssize_t items = PySequence_Size(arg);
      for (Py_ssize_t j = 0; j < items; ++j) {
        PyObject* item = PySequence_GetItem(arg, j);
        if (item == NULL) return -1;
        const int ok =
            PyObject_TypeCheck(item, tensor_type) ? direct_tensor(item, grad, &anchor) : 1;
        Py_DECREF(item); /* the sequence keeps it alive as the anchor */
        if (ok <= 0) return ok;
      }
    } else if (PyObject_TypeCheck(arg, tensor_type)) {
      const int ok = direct_tensor(arg, grad, &anchor);
      if (ok <= 0) return ok;
    }
  }
  if (anchor == NULL) return 0;
  const int not_cuda = is_quiet(PyObject_GetAttr(anchor, is_cuda_name));
  return not_cuda < 0 ? -1 : !not_cuda;
}

/* direct(queries, grad_enabled, args) -> bool: direct_args(). */
static PyObject* direct(PyObject* self, PyObject* const* argv, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 3 || !PyTuple_Check(argv[0]) || !PyTuple_Check(argv[2])) {
    return PyErr_Format(PyExc_TypeError, "direct(queries, grad_enabled, args)");
  }
  const int ok = direct_args(argv[0], argv[1], argv[2]);
  return ok < 0 ? NULL : PyBool_FromLong(ok);
}

/* run(queries, grad_enabled, bump, impl, mutated, args) -> impl(*args) where direct_args()
   allows, then bump([the arguments at the indices `mutated` that are not None]) (their version
   counters, as the dispatcher would); NotImplemented where the call must dispatch instead. */
static PyObject* run(PyObject* self, PyObject* const* argv, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 6 || !PyTuple_Check(argv[0]) || !PyTuple_Check(argv[4]) || !PyTuple_Check(argv[5])) {
    return PyErr_Format(PyExc_TypeError, "run(queries, grad_enabled, bump, impl, mutated, args)");
  }
  PyObject *bump = argv[2], *mutated = argv[4], *args = argv[5];
  const int ok = direct_args(argv[0], argv[1], args);
  if (ok <= 0) return ok < 0 ? NULL : Py_NewRef(Py_NotImplemented);
  PyObject* result = PyObject_Call(argv[3], args, NULL);
  const Py_ssize_t count = PyTuple_Size(mutated);
  if (result == NULL || count == 0) return result;
  PyObject* outputs = PyList_New(0);
  for (Py_ssize_t m = 0; outputs != NULL && m < count; ++m) {
    const Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GetItem(mutated, m));
    PyObject* output = index < 0 ? NULL : PyTuple_GetItem(args, index);
    if (output == NULL || (output != Py_None && PyList_Append(outputs, output) != 0)) {
      Py_CLEAR(outputs);
    }
  }
  PyObject* bumped = outputs == NULL ? NULL : PyObject_CallFunctionObjArgs(bump, outputs, NULL);
  Py_XDECREF(outputs);
  if (bumped == NULL) Py_CLEAR(result);
  Py_XDECREF(bumped);
  return result;
}

/* bind(exchange_capsule, tensor_type, describer, invalid_argument, entries, load, fail,
   get_device, launch_on) once, before any other call (kjit._library). */
static PyObject* bind(PyObject* self, PyObject* args) {
  (void)self;
  PyObject *capsule, *type, *describer, *invalid, *names, *loader, *failure, *get, *on;
  if (!PyArg_ParseTuple(args, "OOOOO!OOOO", &capsule, &type, &describer, &invalid, &PyDict_Type,
                        &names, &loader, &failure, &get, &on)) {
    return NULL;
  }
  const ExchangeApi* api = PyCapsule_GetPointer(capsule, "dlpack_exchange_api");
  if (api == NULL) return NULL;
  if (api->version.major != 1 || api->describe == NULL || api->current_stream == NULL ||
      !PyType_Check(type)) {
    return PyErr_Format(PyExc_ImportError,
                        "kjit: torch's DLPack exchange table is not DLPack 1 "
                        "with describe and current_stream");
  }
  if (exchange != NULL) return PyErr_Format(PyExc_RuntimeError, "kjit._native: bound twice");
  exchange = api; /* the table and these objects live as long as the process */
  tensor_type = (PyTypeObject*)Py_NewRef(type);
  python_describer = Py_NewRef(describer);
  invalid_argument = Py_NewRef(invalid);
  entries = Py_NewRef(names);
  load = Py_NewRef(loader);
  fail = Py_NewRef(failure);
  get_device = Py_NewRef(get);
  launch_on = Py_NewRef(on);
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "Binds torch's exchange table and the package's pieces."},
    {"entry", entry, METH_VARARGS, "entry(address, result_kind, argument_kinds, name)"},
    {"call", (PyCFunction)(void (*)(void))call, METH_FASTCALL, "call(name, *args)"},
    {"launch", (PyCFunction)(void (*)(void))launch, METH_FASTCALL,
     "launch(name, anchor, *args): call(name, *args, anchor's current stream)"},
    {"host_copy", (PyCFunction)(void (*)(void))host_copy, METH_FASTCALL,
     "host_copy(host, device_copy, what) -> host's address"},
    {"direct", (PyCFunction)(void (*)(void))direct, METH_FASTCALL,
     "direct(queries, grad_enabled, args)"},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(queries, grad_enabled, bump, impl, mutated, args)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
  requires_grad_name = PyUnicode_InternFromString("requires_grad");
  is_cuda_name = PyUnicode_InternFromString("is_cuda");
  dtype_name = PyUnicode_InternFromString("dtype");
  device_name = PyUnicode_InternFromString("device");
  shape_name = PyUnicode_InternFromString("shape");
  if (requires_grad_name == NULL || is_cuda_name == NULL || dtype_name == NULL ||
      device_name == NULL || shape_name == NULL) {
    return NULL;
  }
  return PyModule_Create(&module);
}
