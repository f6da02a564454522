// A set for objects that join and leave at a high rate (open connections, tunnels under watch).
//
// Why not a Set: one that thousands of short-lived entries join and leave per second rehashes
// often, and V8 keeps the entries of its obsolete tables reachable until the next full GC. Every
// entry, and all it refers to, was then promoted to the old generation: with the open-connection
// registry as a Set, 1.6 MB per scavenge and a mark-compact every second at ~18k requests/s.
// Here each entry is linked to its neighbours, and an entry that leaves points at nothing.

interface Node<T extends object> {
  readonly owner: LinkedSet<T>
  readonly value: T
  prev: Node<T> | undefined
  next: Node<T> | undefined
}

type Member<T extends object> = Record<symbol, Node<T> | undefined>

/** Add, delete and size in O(1); iteration walks a copy, so entries may leave meanwhile. An object may be in several LinkedSets at once. */
export class LinkedSet<T extends object> implements Iterable<T> {
  /** each set's own link on its members: a socket waits in the proxy port's set while it is in the proxy's registry */
  private readonly node = Symbol('linked-set node')
  private head: Node<T> | undefined
  private count = 0

  get size(): number {
    return this.count
  }

  add(value: T): void {
    const member = value as unknown as Member<T>
    if (member[this.node]) return
    const node: Node<T> = { owner: this, value, prev: undefined, next: this.head }
    if (this.head) this.head.prev = node
    this.head = node
    member[this.node] = node
    this.count++
  }

  delete(value: T): void {
    const member = value as unknown as Member<T>
    const node = member[this.node]
    if (node?.owner !== this) return
    if (node.prev) node.prev.next = node.next
    else this.head = node.next
    if (node.next) node.next.prev = node.prev
    node.prev = node.next = undefined
    member[this.node] = undefined
    this.count--
  }

  [Symbol.iterator](): Iterator<T> {
    const all: T[] = []
    for (let node = this.head; node; node = node.next) all.push(node.value)
    return all[Symbol.iterator]()
  }
}
