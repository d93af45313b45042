-- Wireshark/tshark dissector for pfsync frames as carpsim sends them: FreeBSD/pfSense header
-- version 5, EOF-terminated, 1400-layout states, plus carpsim's XSEQ/XNACK reliability
-- extension (docs/statesync-protocol.md). Registered on ip.proto 240.
-- Usage: tshark -X lua_script:carpsim/dissectors/pfsync.lua -r capture.pcap -V

local pfsync = Proto("pfsync", "pfsync v5 (FreeBSD/pfSense layout, carpsim extension)")

local ACTIONS = {
    [0] = "CLR", [1] = "INS_1301", [2] = "INS_ACK", [3] = "UPD_1301", [4] = "UPD_C",
    [5] = "UPD_REQ", [6] = "DEL", [7] = "DEL_C", [8] = "INS_F", [9] = "DEL_F", [10] = "BUS",
    [11] = "TDB", [12] = "EOF", [13] = "INS", [14] = "UPD", [15] = "INS_1500",
    [16] = "UPD_1500", [240] = "XSEQ", [241] = "XNACK",
}
local REC_LEN = {
    [0] = 20, [1] = 242, [2] = 12, [3] = 242, [4] = 84, [5] = 12, [6] = 242, [7] = 12,
    [10] = 12, [11] = 48, [12] = 0, [13] = 277, [14] = 277, [240] = 24, [241] = 8,
}
local TCP_LEVELS = {
    [0] = "CLOSED", [1] = "LISTEN", [2] = "SYN_SENT", [3] = "SYN_RECEIVED", [4] = "ESTABLISHED",
    [5] = "CLOSE_WAIT", [6] = "FIN_WAIT_1", [7] = "CLOSING", [8] = "LAST_ACK", [9] = "FIN_WAIT_2",
    [10] = "TIME_WAIT", [11] = "PROXY_SRC", [12] = "PROXY_DST",
}
local BUS_STATUS = { [1] = "START", [2] = "END" }
local DIRECTIONS = { [1] = "in", [2] = "out" }

local f = pfsync.fields
f.version = ProtoField.uint8("pfsync.version", "Version")
f.len = ProtoField.uint16("pfsync.len", "Length")
f.cksum = ProtoField.bytes("pfsync.pfcksum", "Ruleset checksum")
f.action = ProtoField.uint8("pfsync.action", "Action", base.DEC, ACTIONS)
f.count = ProtoField.uint16("pfsync.count", "Count")
f.s_id = ProtoField.uint64("pfsync.state.id", "State id", base.HEX)
f.s_creator = ProtoField.uint32("pfsync.state.creatorid", "Creator id", base.HEX)
f.s_af = ProtoField.uint8("pfsync.state.af", "Address family")
f.s_proto = ProtoField.uint8("pfsync.state.proto", "Protocol")
f.s_dir = ProtoField.uint8("pfsync.state.direction", "Direction", base.DEC, DIRECTIONS)
f.s_src = ProtoField.ipv4("pfsync.state.src", "Source (stack key)")
f.s_dst = ProtoField.ipv4("pfsync.state.dst", "Destination (stack key)")
f.s_src6 = ProtoField.ipv6("pfsync.state.src6", "Source (stack key)")
f.s_dst6 = ProtoField.ipv6("pfsync.state.dst6", "Destination (stack key)")
f.s_sport = ProtoField.uint16("pfsync.state.sport", "Source port")
f.s_dport = ProtoField.uint16("pfsync.state.dport", "Destination port")
f.s_wsrc = ProtoField.ipv4("pfsync.state.wire_src", "Source (wire key, after NAT)")
f.s_wdst = ProtoField.ipv4("pfsync.state.wire_dst", "Destination (wire key, after NAT)")
f.s_wsport = ProtoField.uint16("pfsync.state.wire_sport", "Wire source port")
f.s_wdport = ProtoField.uint16("pfsync.state.wire_dport", "Wire destination port")
f.s_slevel = ProtoField.uint8("pfsync.state.src_level", "Src peer TCP level", base.DEC, TCP_LEVELS)
f.s_dlevel = ProtoField.uint8("pfsync.state.dst_level", "Dst peer TCP level", base.DEC, TCP_LEVELS)
f.s_expire = ProtoField.uint32("pfsync.state.expire", "Expires in (s)")
f.s_status = ProtoField.uint32("pfsync.state.ct_status", "conntrack status (src scrub ts_mod)", base.HEX)
f.s_zone = ProtoField.int32("pfsync.state.rtableid", "rtableid (conntrack zone)")
f.u_id = ProtoField.uint64("pfsync.upd_c.id", "State id", base.HEX)
f.u_creator = ProtoField.uint32("pfsync.upd_c.creatorid", "Creator id", base.HEX)
f.u_expire = ProtoField.uint32("pfsync.upd_c.expire", "Expires in (s)")
f.u_slevel = ProtoField.uint8("pfsync.upd_c.src_level", "Src peer TCP level", base.DEC, TCP_LEVELS)
f.u_dlevel = ProtoField.uint8("pfsync.upd_c.dst_level", "Dst peer TCP level", base.DEC, TCP_LEVELS)
f.r_id = ProtoField.uint64("pfsync.ref.id", "State id", base.HEX)
f.r_creator = ProtoField.uint32("pfsync.ref.creatorid", "Creator id", base.HEX)
f.c_ifname = ProtoField.string("pfsync.clr.ifname", "Interface")
f.c_creator = ProtoField.uint32("pfsync.clr.creatorid", "Creator id", base.HEX)
f.b_creator = ProtoField.uint32("pfsync.bus.creatorid", "Creator id", base.HEX)
f.b_endtime = ProtoField.uint32("pfsync.bus.endtime", "End time")
f.b_status = ProtoField.uint8("pfsync.bus.status", "Status", base.DEC, BUS_STATUS)
f.x_epoch = ProtoField.uint32("pfsync.xseq.epoch", "Epoch", base.HEX)
f.x_seq = ProtoField.uint32("pfsync.xseq.seq", "Sequence (0 = unsequenced)")
f.x_oldest = ProtoField.uint32("pfsync.xseq.oldest", "Oldest resendable")
f.x_ack_epoch = ProtoField.uint32("pfsync.xseq.ack_epoch", "ACK epoch", base.HEX)
f.x_ack = ProtoField.uint32("pfsync.xseq.ack", "Cumulative ACK")
f.x_flags = ProtoField.uint8("pfsync.xseq.flags", "Flags", base.HEX)
f.n_first = ProtoField.uint32("pfsync.xnack.first", "Missing from")
f.n_last = ProtoField.uint32("pfsync.xnack.last", "Missing to")
f.raw = ProtoField.bytes("pfsync.record", "Record")

local function state(tvb, tree, label)
    local t = tree:add(tvb(), label)
    local af = tvb(232, 1):uint()
    t:add(f.s_id, tvb(0, 8))
    t:add(f.s_creator, tvb(228, 4))
    t:add(f.s_af, tvb(232, 1))
    t:add(f.s_proto, tvb(233, 1))
    t:add(f.s_dir, tvb(234, 1))
    if af == 2 then
        t:add(f.s_src, tvb(60, 4))
        t:add(f.s_dst, tvb(76, 4))
        t:add(f.s_wsrc, tvb(24, 4))
        t:add(f.s_wdst, tvb(40, 4))
    else
        t:add(f.s_src6, tvb(60, 16))
        t:add(f.s_dst6, tvb(76, 16))
    end
    t:add(f.s_sport, tvb(92, 2))
    t:add(f.s_dport, tvb(94, 2))
    t:add(f.s_wsport, tvb(56, 2))
    t:add(f.s_wdport, tvb(58, 2))
    t:add(f.s_slevel, tvb(96 + 24, 1))
    t:add(f.s_dlevel, tvb(128 + 24, 1))
    t:add(f.s_expire, tvb(192, 4))
    t:add(f.s_status, tvb(100, 4))
    t:add(f.s_zone, tvb(250, 4))
    local summary
    if af == 2 then
        summary = string.format("%s:%d -> %s:%d", tostring(tvb(60, 4):ipv4()), tvb(92, 2):uint(),
            tostring(tvb(76, 4):ipv4()), tvb(94, 2):uint())
    else
        summary = string.format("[%s]:%d -> [%s]:%d", tostring(tvb(60, 16):ipv6()), tvb(92, 2):uint(),
            tostring(tvb(76, 16):ipv6()), tvb(94, 2):uint())
    end
    t:append_text(string.format(": proto %d %s %s/%s expire %ds", tvb(233, 1):uint(), summary,
        TCP_LEVELS[tvb(120, 1):uint()] or "?", TCP_LEVELS[tvb(152, 1):uint()] or "?",
        tvb(192, 4):uint()))
end

local function record(action, tvb, tree)
    if action == 13 or action == 14 then
        state(tvb, tree, "State")
    elseif action == 4 then
        local t = tree:add(tvb(), "Compressed update")
        t:add(f.u_id, tvb(0, 8))
        t:add(f.u_slevel, tvb(8 + 24, 1))
        t:add(f.u_dlevel, tvb(40 + 24, 1))
        t:add(f.u_creator, tvb(72, 4))
        t:add(f.u_expire, tvb(76, 4))
    elseif action == 2 or action == 5 or action == 7 then
        local t = tree:add(tvb(), "State reference")
        t:add(f.r_id, tvb(0, 8))
        t:add(f.r_creator, tvb(8, 4))
        if action == 5 and tvb(0, 8):uint64() == UInt64(0) and tvb(8, 4):uint() == 0 then
            t:append_text(": request for a bulk update")
        end
    elseif action == 0 then
        local t = tree:add(tvb(), "Clear states")
        t:add(f.c_ifname, tvb(0, 16))
        t:add(f.c_creator, tvb(16, 4))
    elseif action == 10 then
        local t = tree:add(tvb(), "Bulk update status")
        t:add(f.b_creator, tvb(0, 4))
        t:add(f.b_endtime, tvb(4, 4))
        t:add(f.b_status, tvb(8, 1))
    elseif action == 240 then
        local t = tree:add(tvb(), "carpsim sequence header")
        t:add(f.x_epoch, tvb(0, 4))
        t:add(f.x_seq, tvb(4, 4))
        t:add(f.x_oldest, tvb(8, 4))
        t:add(f.x_ack_epoch, tvb(12, 4))
        t:add(f.x_ack, tvb(16, 4))
        t:add(f.x_flags, tvb(20, 1))
    elseif action == 241 then
        local t = tree:add(tvb(), "carpsim NACK range")
        t:add(f.n_first, tvb(0, 4))
        t:add(f.n_last, tvb(4, 4))
    else
        tree:add(f.raw, tvb)
    end
end

function pfsync.dissector(tvb, pinfo, tree)
    if tvb:len() < 20 then return 0 end
    pinfo.cols.protocol = "PFSYNC"
    local root = tree:add(pfsync, tvb())
    root:add(f.version, tvb(0, 1))
    root:add(f.len, tvb(2, 2))
    root:add(f.cksum, tvb(4, 16))
    local version = tvb(0, 1):uint()
    if version ~= 5 then
        root:add_expert_info(PI_MALFORMED, PI_ERROR, "unsupported pfsync version " .. version)
        return tvb:len()
    end
    local total = math.min(tvb(2, 2):uint(), tvb:len())
    local off = 20
    local info = {}
    while off + 4 <= total do
        local action = tvb(off, 1):uint()
        local count = tvb(off + 2, 2):uint()
        local size = REC_LEN[action]
        local name = ACTIONS[action] or tostring(action)
        if size == nil then
            root:add_expert_info(PI_MALFORMED, PI_ERROR, "unknown action " .. action)
            break
        end
        local len = 4 + size * count
        if off + len > total then
            root:add_expert_info(PI_MALFORMED, PI_ERROR, name .. " overruns the frame")
            break
        end
        local sub = root:add(pfsync, tvb(off, len), string.format("%s x%d", name, count))
        sub:add(f.action, tvb(off, 1))
        sub:add(f.count, tvb(off + 2, 2))
        if action == 240 and count == 1 then
            table.insert(info, string.format("seq=%d ack=%d", tvb(off + 8, 4):uint(), tvb(off + 20, 4):uint()))
        elseif action == 10 and count >= 1 then
            table.insert(info, "BUS " .. (BUS_STATUS[tvb(off + 12, 1):uint()] or "?"))
        elseif action ~= 12 then
            table.insert(info, string.format("%s x%d", name, count))
        end
        for i = 0, count - 1 do
            record(action, tvb(off + 4 + i * size, size):tvb(), sub)
        end
        off = off + len
        if action == 12 then break end
    end
    pinfo.cols.info = "pfsync " .. table.concat(info, ", ")
    return tvb:len()
end

DissectorTable.get("ip.proto"):add(240, pfsync)
