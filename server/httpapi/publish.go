package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// bodyPool recycles the buffers publish bodies are read into: the
// messages' data point into them until the publish is answered.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// publishBody is either body of POST /api/publish: one message (the
// fields of server.PublishRequest), or a batch ("messages").
type publishBody struct {
	server.PublishRequest
	Messages []server.PublishRequest `json:"messages"`
}

// single reports whether any field of the one-message form is set.
func (b *publishBody) single() bool {
	r := &b.PublishRequest
	return r.Channel != "" || r.Event != "" || r.Data != nil || r.IdempotencyKey != "" ||
		r.ExcludeSession != "" || r.Ephemeral || r.Session != "" || r.ExcludeSender
}

// publish serves POST /api/publish: one message, answered once durable,
// or a batch ("messages"), answered with one result per message once
// every stored one is durable.
func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	done, err := a.srv.EnterUser(id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer done()
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // a huge body's buffer is left to the GC
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	if err := a.readBody(w, r, buf); err != nil {
		a.fail(w, r, err)
		return
	}
	body, ok := parsePublishBody(buf.Bytes())
	if !ok {
		body = publishBody{}
		if err := decodeJSON(bytes.NewReader(buf.Bytes()), &body); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	if body.Messages == nil {
		res, err := a.srv.Publish(r.Context(), id, body.PublishRequest)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		a.writeRaw(w, append(appendPublishResult(buf.AvailableBuffer(), res), '\n'))
		return
	}
	if body.single() {
		a.fail(w, r, server.Invalidf(`request body has "messages" and the fields of one message: send one message, or a list of them in "messages"`))
		return
	}
	outcomes, err := a.srv.PublishBatch(r.Context(), id, body.Messages)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]byte, 0, 16+100*len(outcomes))
	out = append(out, `{"results":[`...)
	failed := 0
	for i, o := range outcomes {
		if i > 0 {
			out = append(out, ',')
		}
		if o.Err == nil {
			out = appendPublishResult(out, o.Result)
			continue
		}
		a.logInternal(r, o.Err)
		failed++
		// A refused message's channel may be anything the client sent.
		var e bytes.Buffer
		enc := json.NewEncoder(&e)
		enc.SetEscapeHTML(false) // as writeJSON: an error quotes the client's value as sent
		_ = enc.Encode(protocol.BatchPublishResult{Channel: body.Messages[i].Channel, Error: ptr(server.ErrorDetail(o.Err))})
		out = append(out, bytes.TrimSuffix(e.Bytes(), []byte("\n"))...)
	}
	out = append(out, `],"failed":`...)
	out = strconv.AppendInt(out, int64(failed), 10)
	out = append(out, "}\n"...)
	a.writeRaw(w, out)
}

func ptr[T any](v T) *T { return &v }

// appendPublishResult appends res as JSON (protocol.PublishResult's
// shape), ending with a newline as writeJSON's answers do. Its strings
// need no escaping: a channel name passed the core's check (a limited
// alphabet), epochs are hex and ids base32.
func appendPublishResult(b []byte, res server.PublishResult) []byte {
	b = append(b, `{"channel":"`...)
	b = append(b, res.Channel...)
	b = append(b, '"')
	if res.Offset != 0 {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, res.Offset, 10)
	}
	if res.Epoch != "" {
		b = append(b, `,"epoch":"`...)
		b = append(b, res.Epoch...)
		b = append(b, '"')
	}
	b = append(b, `,"id":"`...)
	b = append(b, res.ID...)
	b = append(b, '"')
	if res.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	if res.Ephemeral {
		b = append(b, `,"ephemeral":true`...)
	}
	return append(b, '}')
}

// logInternal logs an error that is answered inside a 200 (one message of
// a batch) when it is the server's fault, as WriteError does for a whole
// request.
func (a *API) logInternal(r *http.Request, err error) {
	if server.AsError(err).Code >= 500 && !errors.Is(err, server.ErrShuttingDown) {
		a.log.Error("publish failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}
