from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.models import Role
from governance.pipeline.models import StageBatch
from governance.pipeline.selectors import dead_letters, stage_backlogs
from governance.pipeline.services import dead_letter_retry
from governance.services import client_address
from governance.views import page_action, page_allows, page_object, page_project
from traces.selectors import analysis_lag


@login_required
def pipeline_status(request, slug):
    """How far behind the analysis is, what each stage has waiting, and the traces it gave up on."""
    project = page_project(request, slug)
    page = Paginator(dead_letters(project=project), 50).get_page(request.GET.get("page"))
    return render(request, "pipeline/status.html", {
        "project": project, "lag": analysis_lag(project=project, now=timezone.now()),
        "backlogs": stage_backlogs(project=project), "page": page, "quiet_seconds": settings.TRACE_QUIET_SECONDS,
        "can_retry": page_allows(request, Role.OPERATOR),
    })


@login_required
@require_POST
def dead_letter_retry_view(request, slug, batch_id):
    _, batch = page_object(request, slug, StageBatch, batch_id)
    page_action(request, lambda: dead_letter_retry(batch=batch, actor=request.user, address=client_address(request)),
                done=f"Trace {batch.trace_ids[0]} will go through {batch.stage} again.",
                already="That work is no longer a dead letter: someone retried it already.")
    return redirect("pipeline-status", slug=slug)
