package suggest

import "strings"

// MaxDistance is the largest edit distance at which a word still counts
// as a typo of another: one or two slips of the keyboard.
const MaxDistance = 2

// minPrefix is the shortest word that may be taken as an abbreviation of
// a longer one (or the longer one as the word with something appended).
const minPrefix = 3

// Closest returns the candidate word most likely meant: the one at the
// smallest edit distance (at most MaxDistance, letter case ignored), else
// one that word abbreviates or extends (heartbeat_interval → heartbeat,
// max_sub → max_subscribers). Ties go to the earlier candidate. ok is
// false when no candidate is close; a candidate equal to word is never
// returned.
func Closest(word string, candidates []string) (best string, ok bool) {
	w := strings.ToLower(word)
	bestDist := MaxDistance + 1
	for _, c := range candidates {
		if c == word {
			continue
		}
		if d := Distance(w, strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist <= MaxDistance {
		return best, true
	}
	bestExtra := -1
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if lc == w {
			continue
		}
		short, long := w, lc
		if len(short) > len(long) {
			short, long = long, short
		}
		if len(short) < minPrefix || !strings.HasPrefix(long, short) {
			continue
		}
		if extra := len(long) - len(short); bestExtra < 0 || extra < bestExtra {
			best, bestExtra = c, extra
		}
	}
	return best, bestExtra >= 0
}

// Distance is the edit distance between a and b, in bytes: insertions,
// deletions, substitutions and transpositions of adjacent characters
// each count one (the optimal string alignment distance), so "histroy"
// is one from "history".
func Distance(a, b string) int {
	// Three rows of the dynamic programme: i-2, i-1 and i.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
