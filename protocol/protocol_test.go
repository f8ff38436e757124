package protocol

import (
	"encoding/json"
	"testing"
)

// The prefixes the server writes around pre-encoded envelopes make the
// frames a client decodes with Frame.
func TestFramePrefixes(t *testing.T) {
	t.Parallel()
	env := `{"channel":"A","offset":1,"epoch":"e1","event":"message","data":1}`
	cases := []struct {
		frame, typ string
		messages   int
	}{
		{MessagePrefix + env + `}`, PushMessage, 0},
		{ResetPrefix + env + `}`, PushReset, 0},
		{PresencePrefix + env + `}`, PushPresence, 0},
		{BatchPrefix + env + `,` + env + `]}`, PushBatch, 2},
	}
	for _, tc := range cases {
		var f Frame
		if err := json.Unmarshal([]byte(tc.frame), &f); err != nil || f.Type != tc.typ || f.OK != nil {
			t.Errorf("%s: %+v, %v", tc.frame, f, err)
			continue
		}
		if tc.messages == 0 {
			var e Envelope
			if err := json.Unmarshal(f.Message, &e); err != nil || e.Channel != "A" || e.Offset != 1 {
				t.Errorf("%s: envelope %+v, %v", tc.frame, e, err)
			}
		} else if len(f.Messages) != tc.messages {
			t.Errorf("%s: %d messages, want %d", tc.frame, len(f.Messages), tc.messages)
		}
	}
	// A reply is told from a push by its ok.
	var f Frame
	if err := json.Unmarshal([]byte(`{"id":3,"ok":false,"error":{"code":403,"message":"no","channel":"A"}}`), &f); err != nil ||
		f.OK == nil || *f.OK || f.ID != 3 || f.Error == nil || f.Error.Code != 403 || f.Type != "" {
		t.Errorf("reply %+v, %v", f, err)
	}
}

func TestCloseNames(t *testing.T) {
	t.Parallel()
	for _, code := range []int{CloseNormal, CloseProtocolError, CloseUnsupportedData, CloseAbnormal, CloseMessageTooBig,
		CloseInternalError, CloseServiceRestart, CloseUnauthorized, ClosePolicy, CloseSlowConsumer, CloseTokenExpired} {
		if CloseName(code) == "" {
			t.Errorf("close code %d has no name", code)
		}
	}
	if CloseName(4999) != "" {
		t.Errorf("an unlisted code has a name: %q", CloseName(4999))
	}
}
