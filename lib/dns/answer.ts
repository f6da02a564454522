// What the sandbox's DNS server answers, and the record of it: a name the client's policy allows
// gets proxy-gate's own sandbox address (every connection is then decided when it arrives), any
// other name NXDOMAIN. Nothing is looked up or forwarded. Pure: no sockets.
import { choosePolicy, type PolicySet } from '../policy/clients.js'
import { decideName, misplacedSecret, type Decision, type DecisionContext, type Reason } from '../policy/decide.js'
import type { Ip } from '../policy/ip.js'
import { ruleLabel } from '../policy/rules.js'
import { placeholdersIn } from '../policy/secrets.js'
import { buildResponse, typeName, TYPE_A, TYPE_AAAA, TYPE_ANY, type Parsed, type Question, type Rcode } from './message.js'

/** What the client got: the name answered (NOERROR), NXDOMAIN, or an error code. */
export type DnsAnswer = 'allow' | 'deny' | 'refused' | 'formerr' | 'notimp'

/** Why: the policy's reasons, and the DNS server's own. */
export type DnsReason =
  | Reason
  | 'rate-limited' // more queries from this address than sandbox.dnsQueriesPerSecond
  | 'malformed' // not one well-formed standard query
  | 'not-implemented' // an opcode other than QUERY
  | 'class-not-in' // a question for a class other than IN (CH's version.bind, ...)
  | 'invalid-name' // a name that is not a host name

/** One query, as logged (`"message":"dns"`) and as observers see it. */
export interface DnsRecord {
  /** `address:port` of the client */
  readonly client: string
  readonly transport: 'udp' | 'tcp'
  /** the normalised name, or the name as sent (escaped) when it is not a host name; undefined: unreadable */
  readonly name: string | undefined
  readonly qtype: string | undefined
  readonly answer: DnsAnswer
  readonly reason: DnsReason
  /** the secret whose placeholder the name carried */
  readonly secret?: string | undefined
  readonly rule?: string | undefined
  readonly detail?: string | undefined
  /** the rules.json entry that would let the name resolve, for denials that have one */
  readonly suggestion?: string | undefined
  readonly policy?: string | undefined
  readonly mode: string
  readonly wouldDeny: boolean
}

/** What the answer depends on: the rules in force (a Gate is one). */
export interface DnsRules {
  readonly policies: PolicySet
  readonly ctx: DecisionContext
}

export interface Asker {
  readonly source: Ip | undefined
  /** `address:port`, for the record */
  readonly client: string
  readonly transport: 'udp' | 'tcp'
}

export interface Answered {
  readonly response: Buffer
  readonly record: DnsRecord
}

const RCODE_OF: Record<DnsAnswer, Rcode> = { allow: 'noerror', deny: 'nxdomain', refused: 'refused', formerr: 'formerr', notimp: 'notimp' }

/** The address record for an allowed name: its type's family only (ANY gets the one there is). */
function addressFor(type: number, address: Ip): Ip | undefined {
  if (type === TYPE_ANY) return address
  return (type === TYPE_A && address.family === 4) || (type === TYPE_AAAA && address.family === 6) ? address : undefined
}

function fromDecision(decision: Decision): Pick<DnsRecord, 'answer' | 'reason' | 'rule' | 'detail' | 'suggestion' | 'wouldDeny'> {
  return {
    answer: decision.verdict,
    reason: decision.reason,
    rule: decision.rule ? ruleLabel(decision.rule) : undefined,
    detail: decision.detail,
    suggestion: decision.verdict === 'deny' ? decision.suggestion : undefined,
    wouldDeny: decision.wouldDeny,
  }
}

type Outcome = Omit<DnsRecord, 'client' | 'transport' | 'mode'>

function asked(q: Question | undefined): Pick<DnsRecord, 'name' | 'qtype'> {
  return q ? { name: q.name.ok ? q.name.value : q.display, qtype: typeName(q.type) } : { name: undefined, qtype: undefined }
}

function answerQuestion(q: Question, asker: Asker, rules: DnsRules): Outcome {
  if (!q.inClass) return { ...asked(q), answer: 'refused', reason: 'class-not-in', detail: 'only class IN is answered', wouldDeny: false }
  const chosen = choosePolicy(rules.policies, { source: asker.source, user: undefined })
  // a name is never where a secret's value goes: its placeholder in one is on its way out
  const [misplaced] = placeholdersIn(chosen.policy.secrets, [q.name.ok ? q.name.value : q.display])
  if (misplaced) return { ...asked(q), ...fromDecision(misplacedSecret(rules.ctx, misplaced, undefined, `the DNS name ${q.display}`)), secret: misplaced.name, policy: chosen.name }
  if (!q.name.ok) return { ...asked(q), answer: 'deny', reason: 'invalid-name', detail: q.name.error, wouldDeny: false }
  return { ...asked(q), ...fromDecision(decideName(chosen.policy, rules.ctx, q.name.value)), policy: chosen.name }
}

function outcome(parsed: Exclude<Parsed, { kind: 'drop' }>, asker: Asker, rules: DnsRules, limited: boolean): Outcome {
  const q = parsed.kind === 'query' ? parsed.question : undefined
  if (limited) return { ...asked(q), answer: 'refused', reason: 'rate-limited', wouldDeny: false }
  if (parsed.kind === 'bad') return { ...asked(q), answer: parsed.rcode, reason: parsed.rcode === 'notimp' ? 'not-implemented' : 'malformed', detail: parsed.why, wouldDeny: false }
  return answerQuestion(parsed.question, asker, rules)
}

/**
 * The response to one parsed message (not a dropped one) and its record. `limited`: the client
 * is over its rate, so the message is refused without being decided.
 */
export function answer(parsed: Exclude<Parsed, { kind: 'drop' }>, asker: Asker, rules: DnsRules, address: Ip, limited: boolean): Answered {
  const question = parsed.kind === 'query' ? parsed.question : undefined
  const record: DnsRecord = { client: asker.client, transport: asker.transport, mode: rules.ctx.mode, ...outcome(parsed, asker, rules, limited) }
  const ip = record.answer === 'allow' && question ? addressFor(question.type, address) : undefined
  return { response: buildResponse(parsed.header, RCODE_OF[record.answer], question, ip), record }
}
