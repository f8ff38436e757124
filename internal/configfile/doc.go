// Package configfile reads a YAML configuration file strictly and reports
// every problem of a configuration at once, each where the user can fix
// it: "FILE:LINE: what is wrong (did you mean "history"?)".
//
// Decode walks the YAML node tree itself, against the yaml tags of the
// destination structs: an unknown key is reported with its line and the
// closest known key of its mapping; a value of the wrong type (a word
// where a number is wanted, a duration like 15x) names its key and line.
// Decoding goes on after a problem, so one run finds them all.
//
// Sources remembers where each setting came from — a line of the file, a
// flag, an environment variable — so that the errors of the validation
// that follows (anything implementing KeyedError) are shown at that line,
// or with the flag or variable named instead of the key. A value the user
// never wrote has no origin; an error about a value that could not be
// decoded is dropped, as it was reported already.
//
// The package knows nothing of Herald's settings: the structs passed to
// Decode declare them.
package configfile
