// Retained messages by topic: a Map for exact lookups plus a trie of topic levels so a SUBSCRIBE
// with literal levels only visits the matching branch instead of scanning every retained topic.
//
// All walks use explicit stacks: a topic may have 65,000 levels.

const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;

class Node<T> {
  children: Map<string, Node<T>> | null = null;
  /** Full topic when a value is stored here, else null. */
  topic: string | null = null;
  value: T | undefined = undefined;

  constructor(
    readonly parent: Node<T> | null,
    readonly level: string,
  ) {}
}

export class RetainedIndex<T> implements Iterable<[string, T]> {
  private readonly root = new Node<T>(null, '');
  private readonly byTopic = new Map<string, Node<T>>();
  private nodes = 0;

  get size(): number {
    return this.byTopic.size;
  }

  /** Trie nodes excluding the root; returns to 0 when the index is emptied. */
  get nodeCount(): number {
    return this.nodes;
  }

  get(topic: string): T | undefined {
    return this.byTopic.get(topic)?.value;
  }

  has(topic: string): boolean {
    return this.byTopic.has(topic);
  }

  /** Stores `value` for `topic` (a valid topic name: no wildcards). */
  set(topic: string, value: T): void {
    const existing = this.byTopic.get(topic);
    if (existing !== undefined) {
      existing.value = value;
      return;
    }
    let node = this.root;
    let start = 0;
    while (true) {
      let end = topic.indexOf('/', start);
      if (end === -1) end = topic.length;
      const level = topic.slice(start, end);
      let next = node.children?.get(level);
      if (next === undefined) {
        next = new Node<T>(node, level);
        (node.children ??= new Map()).set(level, next);
        this.nodes++;
      }
      node = next;
      if (end === topic.length) break;
      start = end + 1;
    }
    node.topic = topic;
    node.value = value;
    this.byTopic.set(topic, node);
  }

  /** Removes `topic`; returns true if it was present. Prunes nodes left empty. */
  delete(topic: string): boolean {
    const node = this.byTopic.get(topic);
    if (node === undefined) return false;
    this.byTopic.delete(topic);
    node.topic = null;
    node.value = undefined;
    let n = node;
    while (n.parent !== null && n.topic === null && n.children === null) {
      const parent = n.parent;
      parent.children!.delete(n.level);
      if (parent.children!.size === 0) parent.children = null;
      this.nodes--;
      n = parent;
    }
    return true;
  }

  clear(): void {
    this.root.children = null;
    this.byTopic.clear();
    this.nodes = 0;
  }

  *[Symbol.iterator](): IterableIterator<[string, T]> {
    for (const [topic, node] of this.byTopic) yield [topic, node.value as T];
  }

  /**
   * Calls `visit` for every stored topic matching `filter` (a valid, non-shared topic filter).
   * Topics starting with '$' are not matched by a first-level wildcard [MQTT-4.7.2-1]; '#' also
   * matches the parent level [MQTT-4.7.1-2]. Matches are gathered before any `visit` call, so
   * `visit` may set or delete entries; an entry deleted meanwhile is skipped.
   */
  match(filter: string, visit: (topic: string, value: T) => void): void {
    if (filter.indexOf('+') === -1 && filter.indexOf('#') === -1) {
      const node = this.byTopic.get(filter);
      if (node !== undefined) visit(filter, node.value as T);
      return;
    }
    const found: Node<T>[] = [];
    const stackNodes: Node<T>[] = [this.root];
    const stackPos: number[] = [0];
    const fn = filter.length;
    while (stackNodes.length > 0) {
      const node = stackNodes.pop()!;
      const start = stackPos.pop()!;
      if (start > fn) {
        if (node.topic !== null) found.push(node);
        continue;
      }
      let end = filter.indexOf('/', start);
      if (end === -1) end = fn;
      const children = node.children;
      const single = end - start === 1;
      const c = filter.charCodeAt(start);
      if (single && c === HASH) {
        if (node.topic !== null) found.push(node); // parent level: 'a/#' matches 'a'
        this.collectSubtree(node, node === this.root, found);
      } else if (single && c === PLUS) {
        if (children === null) continue;
        const skipDollar = node === this.root;
        for (const child of children.values()) {
          if (skipDollar && child.level.charCodeAt(0) === DOLLAR) continue;
          stackNodes.push(child);
          stackPos.push(end + 1);
        }
      } else if (children !== null) {
        const child = children.get(filter.slice(start, end));
        if (child !== undefined) {
          stackNodes.push(child);
          stackPos.push(end + 1);
        }
      }
    }
    for (const node of found) {
      // Re-check: an earlier visit may have deleted (or replaced) this entry.
      if (node.topic !== null) visit(node.topic, node.value as T);
    }
  }

  /** Pushes every descendant of `from` holding a value (not `from` itself) onto `found`. */
  private collectSubtree(from: Node<T>, skipDollar: boolean, found: Node<T>[]): void {
    if (from.children === null) return;
    const stack: Node<T>[] = [];
    for (const child of from.children.values()) {
      if (skipDollar && child.level.charCodeAt(0) === DOLLAR) continue;
      stack.push(child);
    }
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node.topic !== null) found.push(node);
      if (node.children !== null) for (const child of node.children.values()) stack.push(child);
    }
  }
}
