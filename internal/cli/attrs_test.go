package cli

import (
	"reflect"
	"testing"
)

func TestParseAttrs(t *testing.T) {
	cases := []struct {
		in      []string
		want    map[string]any
		wantErr bool
	}{
		{nil, nil, false},
		{[]string{"team=3"}, map[string]any{"team": "3"}, false},
		{[]string{"team=3", "team=4"}, map[string]any{"team": []string{"3", "4"}}, false},
		{[]string{"team=3", "team=3"}, map[string]any{"team": "3"}, false},
		{[]string{"team=3", "org=a", "team=4", "team=5"}, map[string]any{"team": []string{"3", "4", "5"}, "org": "a"}, false},
		{[]string{"expr=a=b"}, map[string]any{"expr": "a=b"}, false},
		{[]string{"team"}, nil, true},
		{[]string{"=3"}, nil, true},
		{[]string{"team="}, nil, true},
	}
	for _, tc := range cases {
		got, err := ParseAttrs(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseAttrs(%q): err = %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseAttrs(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}
