package configfile

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// SetString sets the setting key of dst (a pointer to a struct with yaml
// tags; key as the file spells it, "log.level", "cors.allowed_origins")
// from text, the way a flag or an environment variable gives it: a
// string as is, a bool as true or false, a number, a duration like 15s, a
// value of a type with UnmarshalText through it, and a list of strings
// as comma-separated values. Its error says what is wrong with the text,
// without naming the key (the caller names the flag or variable).
func SetString(dst any, key, text string) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("configfile.SetString: want a pointer to a struct, got %T", dst))
	}
	v = v.Elem()
	for _, part := range strings.Split(key, ".") {
		var idx []int
		if v.Kind() == reflect.Struct {
			for _, f := range fieldsOf(v.Type()) {
				if f.key == part {
					idx = f.index
				}
			}
		}
		if idx == nil {
			panic(fmt.Sprintf("configfile.SetString: %T has no setting %q", dst, key))
		}
		v = v.FieldByIndex(idx)
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
	}
	return setText(v, text)
}

func setText(v reflect.Value, text string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(text))
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("%q is not a duration (write it like 15s, 2m or 24h)", text)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(text)
	case reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("%q: want true or false", text)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil || v.OverflowInt(i) {
			return fmt.Errorf("%q is not a whole number", text)
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", text)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			panic(fmt.Sprintf("configfile.SetString: cannot set a list of %s from text", v.Type().Elem()))
		}
		var items []string
		for _, s := range strings.Split(text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			s.Index(i).SetString(item)
		}
		v.Set(s)
	default:
		panic(fmt.Sprintf("configfile.SetString: cannot set a %s from text", v.Type()))
	}
	return nil
}
