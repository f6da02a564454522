// Follows the TLS records a client sends into a relayed tunnel for the tunnel's whole life, and
// reads every ClientHello among them: TLS 1.3 answers a HelloRetryRequest with a second ClientHello,
// still in plaintext, and servers read its server name anew (OpenSSL's servername callback, which
// nginx and HAProxy pick their virtual host with). Pure, and cheap: it walks record headers and the
// handshake messages' framing, and keeps bytes only of a ClientHello being read.
//   records:   type(1) version(2) length(2) body  -- only handshake (0x16) bodies form the handshake stream
//   handshake: type(1) length(3) body             -- ClientHello (1) bodies are read, every other message skipped
// Once a client's handshake is encrypted, its handshake records hold ciphertext whose "framing" is
// noise; a ClientHello is judged only once all its bytes are in, and ciphertext never supplies them.
import { parseHelloBody, type HelloResult } from './tls-hello.js'

const HANDSHAKE = 0x16
const CLIENT_HELLO = 0x01

export class ClientHellos {
  /** bytes of a record header (5) or a handshake message header (4) read so far */
  private readonly header: number[] = []
  private recordType = 0
  private recordLeft = 0
  private messageHeader: number[] = []
  /** bytes of a skipped handshake message still to come */
  private skipLeft = 0
  private hello: Buffer[] | undefined
  private helloSize = 0
  private helloHave = 0
  /** the ClientHello being read claims more than maxBytes: only that many are read, then it is refused */
  private oversized = false

  /** `accept` judges each ClientHello once it is whole (and every one over `maxBytes`, as malformed) */
  constructor(
    private readonly accept: (hello: HelloResult) => boolean,
    private readonly maxBytes: number,
  ) {}

  /** false once a ClientHello in the client's bytes so far is not accepted */
  push(chunk: Buffer): boolean {
    let at = 0
    while (at < chunk.length) {
      if (this.recordLeft === 0) {
        this.header.push(chunk[at++] ?? 0)
        if (this.header.length === 5) this.startRecord()
        continue
      }
      const take = Math.min(this.recordLeft, chunk.length - at)
      this.recordLeft -= take
      if (this.recordType === HANDSHAKE && !this.handshake(chunk.subarray(at, at + take))) return false
      at += take
    }
    return true
  }

  private startRecord(): void {
    const [type = 0, , , high = 0, low = 0] = this.header
    this.header.length = 0
    this.recordType = type
    this.recordLeft = (high << 8) | low
  }

  /** the handshake stream: the bodies of handshake records, one after another */
  private handshake(bytes: Buffer): boolean {
    let at = 0
    while (at < bytes.length) {
      if (this.hello !== undefined) {
        const take = Math.min(this.helloSize - this.helloHave, bytes.length - at)
        this.hello.push(bytes.subarray(at, at + take))
        this.helloHave += take
        at += take
        if (this.helloHave === this.helloSize && !this.helloDone()) return false
      } else if (this.skipLeft > 0) {
        const take = Math.min(this.skipLeft, bytes.length - at)
        this.skipLeft -= take
        at += take
      } else {
        this.messageHeader.push(bytes[at++] ?? 0)
        if (this.messageHeader.length === 4 && !this.startMessage()) return false
      }
    }
    return true
  }

  private startMessage(): boolean {
    const [type = 0, a = 0, b = 0, c = 0] = this.messageHeader
    this.messageHeader = []
    const size = (a << 16) | (b << 8) | c
    if (type !== CLIENT_HELLO) {
      this.skipLeft = size
      return true
    }
    // refused only once that many bytes really came: ciphertext that reads as a huge ClientHello never sends them
    this.oversized = size > this.maxBytes
    this.hello = []
    this.helloSize = Math.min(size, this.maxBytes)
    this.helloHave = 0
    return size > 0 || this.helloDone()
  }

  private helloDone(): boolean {
    const body = Buffer.concat(this.hello ?? [], this.helloHave)
    this.hello = undefined
    if (this.oversized) return this.accept({ kind: 'malformed', reason: `a ClientHello over ${this.maxBytes} bytes` })
    return this.accept(parseHelloBody(body))
  }
}
