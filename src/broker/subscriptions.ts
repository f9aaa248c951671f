// Subscription trie: topic filter levels → subscriptions, with '+', '#' and $share groups.
//
// Hot path is `match`: it walks the topic with indexOf (no split), uses an explicit stack kept on
// the instance (no recursion, no per-call allocation once warm) and appends to caller-owned
// arrays. Nodes with few literal children are searched with `startsWith` in place, so most levels
// are looked up without creating a substring; only wide nodes fall back to a Map.
import { parseSharedFilter } from '../mqtt/topic.js';

export interface Subscription {
  clientId: string;
  /** Filter as subscribed; for a shared subscription the full `$share/group/filter` string. */
  filter: string;
  qos: 0 | 1 | 2;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId?: number;
  /** Set for `$share` subscriptions. The trie derives the group from `filter`, not from this. */
  shareGroup?: string;
}

/** One `$share/group/filter` group. The object is stable while the group has members. */
export interface SharedGroup {
  /** `group + '\u0000' + filter`: unique per group. */
  readonly key: string;
  readonly group: string;
  /** The filter without the `$share/group/` prefix. */
  readonly filter: string;
  /** Current members; order changes on removal (swap-remove). Do not mutate. */
  readonly members: Subscription[];
  /** Free for the router's round-robin position; the trie never reads it. */
  cursor: number;
}

export interface MatchResult {
  direct: Subscription[];
  shared: SharedGroup[];
}

/** Above this many entries a list gets a Map index; below, a linear scan is cheaper and smaller. */
const INDEX_THRESHOLD = 8;
/** Above this many literal children a node switches from arrays to a Map. */
const CHILD_MAP_THRESHOLD = 8;

const DOLLAR = 0x24;
const PLUS = 0x2b;
const HASH = 0x23;

/** Subscriptions keyed by client id: array for allocation-free iteration, optional Map index. */
class SubList {
  readonly members: Subscription[] = [];
  private index: Map<string, number> | null = null;

  find(clientId: string): number {
    if (this.index !== null) return this.index.get(clientId) ?? -1;
    const m = this.members;
    for (let i = 0; i < m.length; i++) if (m[i]!.clientId === clientId) return i;
    return -1;
  }

  /** Returns true if added, false if it replaced the entry of the same client. */
  put(sub: Subscription): boolean {
    const i = this.find(sub.clientId);
    if (i !== -1) {
      this.members[i] = sub;
      return false;
    }
    this.members.push(sub);
    if (this.index !== null) this.index.set(sub.clientId, this.members.length - 1);
    else if (this.members.length > INDEX_THRESHOLD) {
      this.index = new Map();
      for (let k = 0; k < this.members.length; k++) this.index.set(this.members[k]!.clientId, k);
    }
    return true;
  }

  take(clientId: string): Subscription | undefined {
    const i = this.find(clientId);
    if (i === -1) return undefined;
    const m = this.members;
    const removed = m[i]!;
    const last = m.pop()!;
    if (i < m.length) {
      m[i] = last;
      this.index?.set(last.clientId, i);
    }
    this.index?.delete(clientId);
    if (this.index !== null && m.length <= INDEX_THRESHOLD / 2) this.index = null;
    return removed;
  }
}

class Group extends SubList implements SharedGroup {
  cursor = 0;
  constructor(
    readonly key: string,
    readonly group: string,
    readonly filter: string,
  ) {
    super();
  }
}

class Node {
  // Literal children: parallel arrays while small, a Map once wide.
  keys: string[] | null = null;
  kids: Node[] | null = null;
  map: Map<string, Node> | null = null;
  plus: Node | null = null;
  hash: Node | null = null;
  direct: SubList | null = null;
  groups: Group[] | null = null;

  constructor(
    readonly parent: Node | null,
    readonly level: string,
  ) {}

  /** Literal child whose level equals `s.slice(start, end)`, or undefined. */
  child(s: string, start: number, end: number): Node | undefined {
    if (this.map !== null) {
      return this.map.get(start === 0 && end === s.length ? s : s.slice(start, end));
    }
    const keys = this.keys;
    if (keys === null) return undefined;
    const len = end - start;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (k.length === len && s.startsWith(k, start)) return this.kids![i];
    }
    return undefined;
  }

  addChild(level: string): Node {
    const node = new Node(this, level);
    if (level === '+') this.plus = node;
    else if (level === '#') this.hash = node;
    else if (this.map !== null) this.map.set(level, node);
    else if (this.keys === null) {
      this.keys = [level];
      this.kids = [node];
    } else if (this.keys.length < CHILD_MAP_THRESHOLD) {
      this.keys.push(level);
      this.kids!.push(node);
    } else {
      this.map = new Map();
      for (let i = 0; i < this.keys.length; i++) this.map.set(this.keys[i]!, this.kids![i]!);
      this.map.set(level, node);
      this.keys = null;
      this.kids = null;
    }
    return node;
  }

  removeChild(node: Node): void {
    if (this.plus === node) this.plus = null;
    else if (this.hash === node) this.hash = null;
    else if (this.map !== null) {
      this.map.delete(node.level);
      if (this.map.size === 0) this.map = null;
    } else if (this.keys !== null) {
      const i = this.kids!.indexOf(node);
      if (i === -1) return;
      const lastKey = this.keys.pop()!;
      const lastKid = this.kids!.pop()!;
      if (i < this.keys.length) {
        this.keys[i] = lastKey;
        this.kids![i] = lastKid;
      }
      if (this.keys.length === 0) {
        this.keys = null;
        this.kids = null;
      }
    }
  }

  isEmpty(): boolean {
    return this.direct === null && this.groups === null && this.keys === null && this.map === null && this.plus === null && this.hash === null;
  }
}

/** Pushes a node's subscriptions and shared groups onto `out`. */
function collect(node: Node, out: MatchResult): void {
  const d = node.direct;
  if (d !== null) {
    const m = d.members;
    for (let i = 0; i < m.length; i++) out.direct.push(m[i]!);
  }
  const g = node.groups;
  if (g !== null) for (let i = 0; i < g.length; i++) out.shared.push(g[i]!);
}

export class SubscriptionTree {
  private readonly root = new Node(null, '');
  private count = 0;
  private nodes = 0;
  private gen = 0;
  // Reused DFS stack for match: node and the index in the topic where its next level starts.
  private stackNodes: Node[] = [];
  private stackPos: number[] = [];

  /** Number of subscriptions (direct plus shared members). */
  get size(): number {
    return this.count;
  }

  /** Trie nodes excluding the root; returns to 0 when every subscription is removed. */
  get nodeCount(): number {
    return this.nodes;
  }

  /** Bumped on every change, so per-topic match caches can be invalidated. */
  get generation(): number {
    return this.gen;
  }

  /**
   * Adds or replaces the subscription of (clientId, filter). `sub.filter` must be valid per
   * validateTopicFilter. Returns true if new, false if it replaced an existing one.
   */
  add(sub: Subscription): boolean {
    const shared = parseSharedFilter(sub.filter);
    const filter = shared === null ? sub.filter : shared.filter;
    let node = this.root;
    let start = 0;
    while (true) {
      let end = filter.indexOf('/', start);
      if (end === -1) end = filter.length;
      let next = childFor(node, filter, start, end);
      if (next === undefined) {
        next = node.addChild(filter.slice(start, end));
        this.nodes++;
      }
      node = next;
      if (end === filter.length) break;
      start = end + 1;
    }
    let added: boolean;
    if (shared === null) {
      node.direct ??= new SubList();
      added = node.direct.put(sub);
    } else {
      let group = findGroup(node, shared.group);
      if (group === undefined) {
        group = new Group(shared.group + '\u0000' + shared.filter, shared.group, shared.filter);
        (node.groups ??= []).push(group);
      }
      added = group.put(sub);
    }
    if (added) this.count++;
    this.gen++;
    return added;
  }

  /** Removes the subscription of (clientId, filter); returns it, or undefined if absent. */
  remove(clientId: string, filter: string): Subscription | undefined {
    const shared = parseSharedFilter(filter);
    const f = shared === null ? filter : shared.filter;
    const node = this.find(f);
    if (node === undefined) return undefined;
    let removed: Subscription | undefined;
    if (shared === null) {
      if (node.direct === null) return undefined;
      removed = node.direct.take(clientId);
      if (node.direct.members.length === 0) node.direct = null;
    } else {
      const group = findGroup(node, shared.group);
      if (group === undefined) return undefined;
      removed = group.take(clientId);
      if (group.members.length === 0) {
        const groups = node.groups!;
        groups.splice(groups.indexOf(group), 1);
        if (groups.length === 0) node.groups = null;
      }
    }
    if (removed === undefined) return undefined;
    this.count--;
    this.gen++;
    this.prune(node);
    return removed;
  }

  /**
   * Clears `out.direct` and `out.shared`, then fills them with every subscription and shared group
   * whose filter matches `topic` (a valid topic name). A client with overlapping filters appears
   * once per matching filter. The instance's stack is reused; that is safe because match never
   * calls out to other code.
   */
  match(topic: string, out: MatchResult): void {
    out.direct.length = 0;
    out.shared.length = 0;
    const tn = topic.length;
    // [MQTT-4.7.2-1] A '$' topic is not matched by a first-level '+' or '#'.
    const dollar = topic.charCodeAt(0) === DOLLAR;
    const nodes = this.stackNodes;
    const pos = this.stackPos;
    let sp = 0;
    let high = 0;
    nodes[sp] = this.root;
    pos[sp] = 0;
    sp++;
    while (sp > 0) {
      sp--;
      const node = nodes[sp]!;
      const start = pos[sp]!;
      if (start > tn) {
        // Every level consumed: this filter ends here, or continues with '#' for the parent level.
        collect(node, out);
        if (node.hash !== null) collect(node.hash, out);
        continue;
      }
      let end = topic.indexOf('/', start);
      if (end === -1) end = tn;
      const wild = start !== 0 || !dollar;
      if (wild && node.hash !== null) collect(node.hash, out);
      if (wild && node.plus !== null) {
        nodes[sp] = node.plus;
        pos[sp] = end + 1;
        sp++;
      }
      const lit = node.child(topic, start, end);
      if (lit !== undefined) {
        nodes[sp] = lit;
        pos[sp] = end + 1;
        sp++;
      }
      if (sp > high) high = sp;
    }
    // Drop node references so removed subtrees can be collected; keep the arrays' capacity.
    for (let i = 1; i < high; i++) nodes[i] = this.root;
  }

  /** Node for a (non-shared) filter, or undefined when no such path exists. */
  private find(filter: string): Node | undefined {
    let node: Node | undefined = this.root;
    let start = 0;
    while (true) {
      let end = filter.indexOf('/', start);
      if (end === -1) end = filter.length;
      node = childFor(node, filter, start, end);
      if (node === undefined) return undefined;
      if (end === filter.length) return node;
      start = end + 1;
    }
  }

  /** Detaches `node` and its ancestors while they hold nothing. */
  private prune(node: Node): void {
    let n = node;
    while (n.parent !== null && n.isEmpty()) {
      n.parent.removeChild(n);
      this.nodes--;
      n = n.parent;
    }
  }
}

/** Child of `node` for the filter level `filter.slice(start, end)`, wildcards included. */
function childFor(node: Node, filter: string, start: number, end: number): Node | undefined {
  if (end - start === 1) {
    const c = filter.charCodeAt(start);
    if (c === PLUS) return node.plus ?? undefined;
    if (c === HASH) return node.hash ?? undefined;
  }
  return node.child(filter, start, end);
}

function findGroup(node: Node, group: string): Group | undefined {
  const groups = node.groups;
  if (groups === null) return undefined;
  for (let i = 0; i < groups.length; i++) if (groups[i]!.group === group) return groups[i];
  return undefined;
}
