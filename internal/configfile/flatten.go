package configfile

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Setting is one setting of a configuration and its value, as text.
type Setting struct {
	Key   string
	Value string
}

// Flatten lists the settings of v (a struct, or a pointer to one, with
// yaml tags) in order, by key as the file spells them: strings quoted,
// durations as 15s, lists of values as ["a", "b"]. Nil pointers and lists
// of mappings are left out.
func Flatten(v any) []Setting {
	var out []Setting
	flatten(reflect.Indirect(reflect.ValueOf(v)), "", &out)
	return out
}

func flatten(v reflect.Value, key string, out *[]Setting) {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok && v.Kind() != reflect.Pointer {
		b, err := m.MarshalText()
		if err == nil {
			*out = append(*out, Setting{key, strconv.Quote(string(b))})
			return
		}
	}
	if v.Type() == durationType {
		*out = append(*out, Setting{key, FormatDuration(time.Duration(v.Int()))})
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			flatten(v.Elem(), key, out)
		}
	case reflect.Struct:
		for _, f := range fieldsOf(v.Type()) {
			flatten(v.FieldByIndex(f.index), joinKey(key, f.key), out)
		}
	case reflect.Slice:
		if k := v.Type().Elem().Kind(); k == reflect.Struct || k == reflect.Pointer {
			return
		}
		if v.IsNil() {
			*out = append(*out, Setting{key, "null"})
			return
		}
		items := make([]string, v.Len())
		for i := range items {
			items[i] = scalarText(v.Index(i))
		}
		*out = append(*out, Setting{key, "[" + strings.Join(items, ", ") + "]"})
	default:
		*out = append(*out, Setting{key, scalarText(v)})
	}
}

func scalarText(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// FormatDuration writes d as a configuration file would: 24h, 1m30s,
// 100ms (time.Duration.String without the trailing 0m0s).
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
