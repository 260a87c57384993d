package discordsim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// DefaultUploadLimit is the largest request body the simulator accepts (Discord's default upload
// limit); Server.SetUploadLimit changes it.
const DefaultUploadLimit = 25 << 20

// maxAttachments is how many files one message may carry.
const maxAttachments = 10

var errTooLarge = errors.New("request entity too large")

// emptySHA256 is the hash of an empty body, so bodiless requests skip hashing.
var emptySHA256 = func() string { s := sha256.Sum256(nil); return hex.EncodeToString(s[:]) }()

// bodyReader counts, hashes and bounds a request body as it streams, so the request log can prove
// that a body arrived byte for byte without buffering uploads.
type bodyReader struct {
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
	over  bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.over {
		return 0, errTooLarge
	}
	n, err := b.r.Read(p)
	if n > 0 {
		if b.h == nil {
			b.h = sha256.New()
		}
		b.h.Write(p[:n])
		b.n += int64(n)
		if b.n > b.limit {
			b.over = true
			return n, errTooLarge
		}
	}
	return n, err
}

// finish reads what the handler left unread and returns the body's size and hash.
func (b *bodyReader) finish() (int64, string) {
	if !b.over {
		_, _ = io.Copy(io.Discard, b)
	}
	if b.h == nil {
		return 0, emptySHA256
	}
	return b.n, hex.EncodeToString(b.h.Sum(nil))
}

// restPayload is a request body that creates or edits a message: JSON, or multipart with payload_json
// and files[n].
type restPayload struct {
	Content          *string           `json:"content"`
	Nonce            json.RawMessage   `json:"nonce"`
	TTS              bool              `json:"tts"`
	Embeds           []json.RawMessage `json:"embeds"`
	Components       []json.RawMessage `json:"components"`
	StickerIDs       []string          `json:"sticker_ids"`
	Attachments      []json.RawMessage `json:"attachments"`
	Poll             json.RawMessage   `json:"poll"`
	Flags            int               `json:"flags"`
	MessageReference json.RawMessage   `json:"message_reference"`
	Username         string            `json:"username"`
	AvatarURL        string            `json:"avatar_url"`

	files []simAttachment
}

// readJSON decodes a JSON body into v. On failure it has answered as Discord does and returns false:
// 413 over the upload limit, 50109 for malformed JSON, 50035 for a well-formed body of the wrong shape.
func (c *restReq) readJSON(v any) bool {
	data, err := io.ReadAll(c.body)
	if err != nil {
		c.bodyError(err)
		return false
	}
	mt, _, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	switch {
	case len(data) == 0 || (mt != "application/json" && mt != "application/x-www-form-urlencoded"):
		// Discord reads no body it was not told the type of: a JSON body without its Content-Type is
		// an empty one.
		data = []byte("{}")
	case mt == "application/x-www-form-urlencoded":
		// Discord also takes form fields; they arrive as strings.
		vals, err := url.ParseQuery(string(data))
		if err != nil {
			writeError(c.w, http.StatusBadRequest, 0, "400: Bad Request")
			return false
		}
		obj := make(map[string]string, len(vals))
		for k, vs := range vals {
			obj[k] = vs[0]
		}
		data, _ = json.Marshal(obj)
	}
	return c.decodeJSON(data, v, "")
}

func (c *restReq) decodeJSON(data []byte, v any, field string) bool {
	err := json.Unmarshal(data, v)
	if err == nil {
		return true
	}
	var syn *json.SyntaxError
	if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || !json.Valid(data) {
		writeJSON(c.w, http.StatusBadRequest, map[string]any{"code": 50109, "message": "The request body contains invalid JSON."})
		return false
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		field = typ.Field
	}
	if field == "" {
		field = "_root"
	}
	writeFormError(c.w, field, "MODEL_TYPE_CONVERT", "Invalid value type.")
	return false
}

func (c *restReq) bodyError(err error) {
	if errors.Is(err, errTooLarge) {
		c.rs.stats.tooLarge.Add(1)
		writeError(c.w, http.StatusRequestEntityTooLarge, 40005, "Request entity too large")
		return
	}
	writeError(c.w, http.StatusBadRequest, 0, "400: Bad Request")
}

// readPayload reads a message body, JSON or multipart/form-data.
func (c *restReq) readPayload(p *restPayload) bool {
	files, ok := c.readBody(p)
	p.files = files
	return ok
}

// readBody decodes a JSON body, or a multipart/form-data one whose payload_json part holds the JSON
// and whose files[n] parts are attachments. Multipart is parsed as it streams: file parts are counted,
// never held in memory.
func (c *restReq) readBody(v any) ([]simAttachment, bool) {
	mt, params, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return nil, c.readJSON(v)
	}
	var files []simAttachment
	mr := multipart.NewReader(c.body, params["boundary"])
	sawPayload := false
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return files, true
		}
		if err != nil {
			c.bodyError(err)
			return nil, false
		}
		name := part.FormName()
		switch {
		case name == "payload_json":
			data, err := io.ReadAll(part)
			if err != nil {
				c.bodyError(err)
				return nil, false
			}
			if !c.decodeJSON(data, v, "payload_json") {
				return nil, false
			}
			sawPayload = true
		case strings.HasPrefix(name, "file"):
			if part.FileName() == "" {
				writeFormError(c.w, name, "BINARY_TYPE_REQUIRED", "This field is required to be a file.")
				return nil, false
			}
			n, err := io.Copy(io.Discard, part)
			if err != nil {
				c.bodyError(err)
				return nil, false
			}
			if len(files) == maxAttachments {
				writeFormError(c.w, "files", "BASE_TYPE_MAX_LENGTH", "Must be "+strconv.Itoa(maxAttachments)+" or fewer in length.")
				return nil, false
			}
			files = append(files, simAttachment{ID: FormatID(c.rs.newID()), Filename: part.FileName(),
				ContentType: part.Header.Get("Content-Type"), Size: n})
		default:
			// Discord also takes the payload's fields as form fields; content is the one bots use.
			data, err := io.ReadAll(part)
			if err != nil {
				c.bodyError(err)
				return nil, false
			}
			if p, ok := v.(*restPayload); ok && name == "content" && !sawPayload {
				s := string(data)
				p.Content = &s
			}
		}
	}
}

// validMessage checks what Discord checks on every message create: not empty, content and embeds
// within their limits. It answers and returns false when the payload is refused.
func (c *restReq) validMessage(p *restPayload) bool {
	content := ""
	if p.Content != nil {
		content = *p.Content
	}
	if content == "" && len(p.Embeds) == 0 && len(p.Components) == 0 && len(p.StickerIDs) == 0 &&
		len(p.files) == 0 && len(p.Poll) == 0 {
		writeError(c.w, http.StatusBadRequest, 50006, "Cannot send an empty message")
		return false
	}
	if n := len([]rune(content)); n > 2000 {
		writeFormError(c.w, "content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
		return false
	}
	if len(p.Embeds) > 10 {
		writeFormError(c.w, "embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
		return false
	}
	return true
}
