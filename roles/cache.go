package roles

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ddhq/dd/cache"
	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/queue"
	"github.com/ddhq/dd/store"
)

// newCache opens the cache role's cache and its HTTP API (README, "The cache role"). With --role=all the
// gateway feeds it in-process and following is the gateway queue's cache consumer (for readiness; nil
// otherwise); alone, it takes events on POST /events from the gateway's cache feed.
func newCache(cfg *config.Config, st *store.Store, following *queue.Consumer, reg prometheus.Registerer, log *zap.Logger) (*cache.Cache, *cache.Handler, error) {
	log = log.Named("cache")
	k := cfg.Cache
	c, err := cache.Open(st, cache.Options{
		Fields: cache.Fields{Guild: k.GuildFields, Channel: k.ChannelFields, Role: k.RoleFields, Member: k.MemberFields,
			User: k.UserFields, Emoji: k.EmojiFields, Sticker: k.StickerFields, VoiceState: k.VoiceStateFields,
			Presence: k.PresenceFields, Message: k.MessageFields},
		Presences: k.Presences, MessagesPerChannel: k.MessagesPerChannel, LoadingGuildEvent: cfg.Gateway.LoadingGuildEvent,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, nil, err
	}
	o := cache.HandlerOptions{Disk: st, Logger: log}
	if following != nil {
		o.Following = following
	}
	return c, cache.NewHandler(c, o), nil
}
