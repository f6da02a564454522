// Words in the commands proxy-gate prints for a person to run: a path with spaces or quotes
// must come through a POSIX shell as one word.

/** The word as is when the shell would leave it alone, else single-quoted. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`
}
