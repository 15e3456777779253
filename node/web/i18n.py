"""The pages' words in Chinese (the default) and English.

One table, keyed by a short name, so a page never mixes languages and a missing
translation falls back to the Chinese text rather than failing the page.
"""

from __future__ import annotations

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

_TEXT: dict[str, tuple[str, str]] = {
    "app_title": ("长三角一网通办 柜台", "YRD gateway counter"),
    "login": ("登录", "Log in"),
    "logout": ("退出", "Log out"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "bad_login": ("用户名或密码错误", "Wrong username or password"),
    "throttled": ("尝试过多，请稍后再试", "Too many attempts; try again later"),
    "session_expired": ("会话已过期，请重新登录", "Your session has ended; log in again"),
    "csrf_failed": ("表单已过期，请重试", "The form expired; please try again"),
    "nav_services": ("查找事项", "Find a matter"),
    "nav_queue": ("本柜台办件", "Counter queue"),
    "nav_owner": ("待办工作", "Work queue"),
    "nav_console": ("运维控制台", "Operator console"),
    "nav_track": ("办件查询", "Track an application"),
    "search": ("查询", "Search"),
    "search_hint": ("事项名称（中文或英文）", "Name of the matter (Chinese or English)"),
    "owner_division": ("办理地区划代码", "Owner division code"),
    "department": ("部门", "Department"),
    "owner": ("办理地", "Owner"),
    "time_limit": ("承诺时限", "Promised time limit"),
    "working_days": ("个工作日", "working days"),
    "materials": ("申请材料", "Materials"),
    "required": ("必需", "required"),
    "optional": ("可选", "optional"),
    "apply": ("受理", "Apply"),
    "no_results": ("没有找到事项", "No matter found"),
    "applicant": ("申请人", "Applicant"),
    "applicant_name": ("申请人姓名", "Applicant's name"),
    "applicant_id_number": ("身份证号码", "Resident ID number"),
    "form": ("申请表", "Form"),
    "attachment": ("附件", "Attachment"),
    "consent_text": (
        "申请人已知悉并同意：本申请所填信息及材料将加密传送至办理地，仅用于办理本事项。",
        "The applicant was told and agrees that the form and materials are sent, sealed, to the "
        "owning jurisdiction and used only to handle this matter.",
    ),
    "consent": ("已向申请人宣读并取得同意", "Read aloud to the applicant; consent given"),
    "submit": ("提交", "Submit"),
    "fix_errors": ("请更正标出的内容", "Please correct the marked fields"),
    "application": ("申请", "Application"),
    "status": ("状态", "Status"),
    "history": ("办理记录", "History"),
    "documents": ("结果文书", "Result documents"),
    "receipt": ("受理回执", "Receipt"),
    "print": ("打印", "Print"),
    "check_code": ("查询码", "Check code"),
    "receipt_hint": (
        "扫描二维码或在办件查询页输入申请编号和查询码即可查看办理进度。",
        "Scan the code, or enter the application id and check code on the tracking page.",
    ),
    "submitted_at": ("提交时间", "Submitted"),
    "due_at": ("承诺办结", "Due"),
    "overdue": ("已超期", "overdue"),
    "service": ("事项", "Matter"),
    "all": ("全部", "all"),
    "filter": ("筛选", "Filter"),
    "held": ("待复核", "held for a second clerk"),
    "release": ("复核放行", "Release"),
    "submitted_by": ("受理人", "Submitted by"),
    "origin": ("受理地", "Origin"),
    "received_at": ("收件时间", "Received"),
    "handler": ("办理方式", "Handling"),
    "open": ("办理", "Open"),
    "approve": ("批准", "Approve"),
    "reject": ("不予批准", "Reject"),
    "need_materials": ("补正材料", "Ask for materials"),
    "reason": ("理由", "Reason"),
    "attach_document": ("结果文书（可选）", "Result document (optional)"),
    "decide": ("作出决定", "Decide"),
    "decided": ("已处理", "Decided"),
    "track_title": ("办件进度查询", "Follow an application"),
    "track_hint": (
        "无需登录：输入回执上的申请编号和查询码。",
        "No account needed: the id and check code from the receipt.",
    ),
    "application_id": ("申请编号", "Application id"),
    "not_found": ("没有找到，请核对编号和查询码", "Not found; check the id and the code"),
    "node": ("本节点", "This node"),
    "manifest": ("联盟清单", "Manifest"),
    "version": ("版本", "version"),
    "fingerprint": ("指纹", "fingerprint"),
    "keys": ("密钥", "Keys"),
    "valid": ("有效期", "valid"),
    "expires_soon": ("30天内到期", "expires within 30 days"),
    "expired": ("已过期", "expired"),
    "policy": ("策略包", "Policy bundle"),
    "signer": ("签名密钥", "signed by key"),
    "catalogue": ("事项目录", "Catalogue"),
    "digest": ("摘要", "digest"),
    "peers": ("对端节点", "Peers"),
    "peer": ("节点", "Peer"),
    "reachable": ("可达", "Reachable"),
    "last_success": ("最近成功", "Last success"),
    "rtt": ("往返时延", "RTT"),
    "queue_depth": ("队列", "Queue"),
    "oldest": ("最早待发", "Oldest waiting"),
    "backoff": ("退避", "Backoff"),
    "dead_letters": ("死信", "Dead letters"),
    "redrive": ("重新投递", "Re-drive"),
    "charts": ("最近一小时", "The last hour"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "never": ("从未", "never"),
    "seconds_ago": ("秒前", "s ago"),
    "forbidden": ("您的角色无权访问此页", "Your role may not open this page"),
    "error": ("出错了", "Something went wrong"),
    "back": ("返回", "Back"),
    "chart_submitted": ("本柜台受理（每5秒）", "submitted here (per 5 s)"),
    "chart_received": ("收到的申请（每5秒）", "received as owner (per 5 s)"),
    "chart_envelopes_rejected": ("拒收的信封（每5秒）", "envelopes refused (per 5 s)"),
    "chart_outbox_pending": ("待发队列", "outbox waiting"),
    "chart_owner_worklist": ("待办申请", "open at the owner"),
    "chart_owner_overdue": ("超期申请", "overdue at the owner"),
    "chart_dead_letters": ("死信", "dead letters"),
    "chart_http_requests": ("HTTP 请求（每5秒）", "HTTP requests (per 5 s)"),
    "updates_itself": ("本页自动更新", "This page updates by itself"),
    # clues (一网统管), the console's block
    "clues": ("监管线索", "Supervision clues"),
    "clue_domain": ("领域", "Domain"),
    "clue_received": ("收到", "received"),
    "clue_open": ("未办结", "open"),
    "clue_overdue": ("超期", "overdue"),
    "clue_escalated": ("已升级", "escalated"),
    "clue_closed": ("已办结", "closed"),
    "no_clues": ("尚无线索", "no clues yet"),
}

STATUS: dict[str, tuple[str, str]] = {
    "awaiting_approval": ("待复核", "held for release"),
    "submitted": ("已提交", "submitted"),
    "delivered": ("已送达", "delivered"),
    "in_review": ("审查中", "in review"),
    "needs_materials": ("需补正材料", "needs materials"),
    "approved": ("已批准", "approved"),
    "rejected": ("不予批准", "rejected"),
    "completed": ("已办结", "completed"),
    "refused": ("被拒收", "refused"),
}


def text(lang: str, key: str) -> str:
    pair = _TEXT.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


def status_text(lang: str, status: str) -> str:
    pair = STATUS.get(status)
    if pair is None:
        return status
    return pair[1] if lang == "en" else pair[0]
