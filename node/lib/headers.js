'use strict'
// Headers: a multi-value header map with @platformatic/python-node's methods.  Names are kept
// lower-case (as http::HeaderMap and ASGI do); each name keeps its values in order.  The
// per-name views (size, keys, values, entries, forEach) join a name's values with ',' as
// python-node does; getAll() and the wire form (pairs()) keep them as separate fields.

/** A plain object of header values: a string, or an array of strings (separate fields). */
function isIterable (v) {
  return v != null && typeof v[Symbol.iterator] === 'function' && typeof v !== 'string'
}

class Headers {
  /** From a HeaderMap ({name: value | [values]}), another Headers (ours or fetch's), a Node
   * IncomingHttpHeaders, or an iterable of [name, value] pairs. */
  constructor (init) {
    this._map = new Map() // lower-case name -> [values]
    if (init == null) return
    if (init instanceof Headers) {
      for (const [k, vs] of init._map) this._map.set(k, [...vs])
    } else if (typeof init.getSetCookie === 'function' && typeof init.forEach === 'function') {
      // a WHATWG Headers: forEach joins repeated fields; set-cookie is the one kept apart
      init.forEach((v, k) => { if (k !== 'set-cookie') this.add(k, v) })
      for (const c of init.getSetCookie()) this.add('set-cookie', c)
    } else if (isIterable(init)) {
      for (const [k, v] of init) this.add(k, v)
    } else if (typeof init === 'object') {
      for (const k of Object.keys(init)) {
        if (init[k] !== undefined) this.set(k, init[k])
      }
    } else {
      throw new TypeError('headers must be an object, a Headers or an iterable of pairs')
    }
  }

  /** The last value of `key`, or null. */
  get (key) {
    const vs = this._map.get(String(key).toLowerCase())
    return vs ? vs[vs.length - 1] : null
  }

  /** Every value of `key`, in order ([] when absent). */
  getAll (key) {
    return [...(this._map.get(String(key).toLowerCase()) || [])]
  }

  /** The values of `key` joined with ',' (python-node's form), or null. */
  getLine (key) {
    const vs = this._map.get(String(key).toLowerCase())
    return vs ? vs.join(',') : null
  }

  has (key) {
    return this._map.has(String(key).toLowerCase())
  }

  /** Replace the values of `key` with `value` (a string, or an array: separate fields). */
  set (key, value) {
    const vs = (Array.isArray(value) ? value : [value]).map(String)
    if (vs.length === 0) this._map.delete(String(key).toLowerCase())
    else this._map.set(String(key).toLowerCase(), vs)
    return true
  }

  /** Add one more field `key: value` (an array adds several). */
  add (key, value) {
    const k = String(key).toLowerCase()
    const vs = this._map.get(k) || []
    for (const v of Array.isArray(value) ? value : [value]) vs.push(String(v))
    if (vs.length) this._map.set(k, vs)
    return true
  }

  /** Remove every value of `key`; true if there was one. */
  delete (key) {
    return this._map.delete(String(key).toLowerCase())
  }

  clear () {
    this._map.clear()
  }

  /** The number of distinct names. */
  get size () {
    return this._map.size
  }

  /** [name, values joined with ','] per name. */
  entries () {
    return [...this._map].map(([k, vs]) => [k, vs.join(',')])
  }

  keys () {
    return [...this._map.keys()]
  }

  values () {
    return [...this._map.values()].map((vs) => vs.join(','))
  }

  forEach (callback, thisArg) {
    for (const [k, vs] of this._map) callback.call(thisArg, vs.join(','), k, this)
  }

  [Symbol.iterator] () {
    return this.entries()[Symbol.iterator]()
  }

  /** {name: value} with a single value as a string and several as an array (a HeaderMap,
   * so `new Headers(h.toJSON())` is the same headers again). */
  toJSON () {
    const out = {}
    for (const [k, vs] of this._map) out[k] = vs.length === 1 ? vs[0] : [...vs]
    return out
  }

  /** Every field as its own [name, value] pair, in order: what goes to the app. */
  pairs () {
    const out = []
    for (const [k, vs] of this._map) for (const v of vs) out.push([k, v])
    return out
  }
}

module.exports = { Headers }
