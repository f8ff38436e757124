package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestScanJSONValue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in     string
		n      int // -1: not a value
		spaced bool
	}{
		{`{"a":1}`, 7, false},
		{`{"a": 1}`, 8, true},
		{`[1,2,3] tail`, 7, false},
		{`[ ]`, 3, true},
		{`"a\"b\u00e9\n"`, 14, false},
		{`"\x"`, -1, false},
		{`"\u12g4"`, -1, false},
		{"\"a\tb\"", -1, false},
		{`-0.5e+10`, 8, false},
		{`01`, 1, false},
		{`-`, -1, false},
		{`1.`, -1, false},
		{`1e`, -1, false},
		{`tru`, -1, false},
		{`null`, 4, false},
		{`{"a":[true,false,null,{"b":"c"}]}`, 33, false},
		{`{"a":1,}`, -1, false},
		{`{"a" 1}`, -1, false},
		{`[1 2]`, -1, false},
		{` 1`, -1, false},
		{strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), 2 * maxJSONDepth, false},
		{strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), -1, false},
	}
	for _, tc := range cases {
		n, spaced, ok := ScanJSONValue([]byte(tc.in))
		if tc.n < 0 {
			if ok {
				t.Errorf("%.40q: scanned %d bytes as a value, want refused", tc.in, n)
			}
			continue
		}
		if !ok || n != tc.n || spaced != tc.spaced {
			t.Errorf("%.40q: %d %v %v, want %d %v", tc.in, n, spaced, ok, tc.n, tc.spaced)
		}
	}
}

// FuzzScanJSONValue holds the scanner to encoding/json: what it accepts is
// valid JSON, it says "spaced" exactly when json.Compact changes the value,
// and it accepts every valid value (without surrounding whitespace).
func FuzzScanJSONValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,"x",true,null]}`, `[ 1 , 2 ]`, `"\ud83d\ude00"`, `-12.5E-3`, `{"":{}}`, `[`, `0x1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, spaced, ok := ScanJSONValue(b)
		if ok {
			v := b[:n]
			if !json.Valid(v) {
				t.Fatalf("%q: accepted %q, which encoding/json refuses", b, v)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, v); err != nil {
				t.Fatal(err)
			}
			if changed := !bytes.Equal(buf.Bytes(), v); changed != spaced {
				t.Fatalf("%q: spaced %v, but compacting it changes it: %v", v, spaced, changed)
			}
		}
		if json.Valid(b) && len(b) > 0 && len(trimJSONSpace(b)) == len(b) && (!ok || n != len(b)) {
			t.Fatalf("%q: a valid value, scanned as %d bytes, %v", b, n, ok)
		}
	})
}

func TestCompactDataKeepsCompactDataAndCompactsTheRest(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, out, err string }{
		{`{"a":1}`, `{"a":1}`, ""},
		{" \n{\"a\": [1, 2]}\t", `{"a":[1,2]}`, ""},
		{``, `null`, ""},
		{"  ", `null`, ""},
		{`{"a":`, "", "not valid JSON"},
		{"\u00a0{}", "", "not valid JSON"},
		{`"` + strings.Repeat("x", 20) + `"`, "", "limit is 16"},
	}
	for _, tc := range cases {
		got, err := compactData(json.RawMessage(tc.in), 16)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %s, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.out {
			t.Errorf("%q: %s, %v; want %s", tc.in, got, err, tc.out)
		}
	}
}
