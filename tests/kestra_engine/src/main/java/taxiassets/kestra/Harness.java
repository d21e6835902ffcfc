package taxiassets.kestra;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.slf4j.event.Level;

import com.fasterxml.jackson.databind.ObjectMapper;

import io.kestra.core.models.conditions.ConditionContext;
import io.kestra.core.models.executions.Execution;
import io.kestra.core.models.executions.LogEntry;
import io.kestra.core.models.executions.MetricEntry;
import io.kestra.core.models.executions.TaskRun;
import io.kestra.core.models.flows.Flow;
import io.kestra.core.models.flows.FlowSource;
import io.kestra.core.models.flows.FlowWithSource;
import io.kestra.core.models.triggers.AbstractTrigger;
import io.kestra.core.models.triggers.Schedulable;
import io.kestra.core.models.triggers.TriggerContext;
import io.kestra.core.models.triggers.TriggerEvaluationResult;
import io.kestra.core.models.validations.ValidateConstraintViolation;
import io.kestra.core.repositories.ExecutionRepositoryInterface;
import io.kestra.core.repositories.FlowRepositoryInterface;
import io.kestra.core.repositories.LocalFlowRepositoryLoader;
import io.kestra.core.repositories.LogDataStoreInterface;
import io.kestra.core.repositories.MetricRepositoryInterface;
import io.kestra.core.runners.DefaultRunContext;
import io.kestra.core.runners.FlowInputOutput;
import io.kestra.core.runners.RunContextFactory;
import io.kestra.core.runners.TestRunner;
import io.kestra.core.runners.TestRunnerUtils;
import io.kestra.core.scheduler.service.TriggerExecutionPublisher;
import io.kestra.core.serializers.JacksonMapper;
import io.kestra.core.services.FlowService;
import io.kestra.core.services.TaskOutputService;

import io.micronaut.context.ApplicationContext;
import io.micronaut.data.model.Pageable;

/**
 * Kestra's engine as a process the Python tests talk to: one JSON request per line on stdin, one
 * JSON answer per line on stdout (Kestra's own logs go to stderr / the log file).
 *
 * <p>It starts what {@code @KestraTest(startRunner = true)} starts (executor, worker, worker
 * controller, indexer on the in-memory repository and queue, local storage) once, so the suite pays
 * Kestra's start-up once and keeps every assertion on tables in Python.
 *
 * <p>Each request carries an {@code id} that its answer repeats, beside {@code result} or {@code error}.
 * Requests ({@code op}):
 * <ul>
 *   <li>{@code validate {sources: [{filename, content}]}}: Kestra's {@link FlowService#validate}, what
 *       the UI and {@code POST /flows/validate} use (strict parsing, constraints, warnings, deprecations).</li>
 *   <li>{@code load {dir}}: {@link LocalFlowRepositoryLoader}, as {@code --flow-path} loads flows; the
 *       answer lists what it accepted (it skips invalid flows with a warning only).</li>
 *   <li>{@code run {namespace, flow, inputs, timeoutSeconds}}: a manual execution to its end.</li>
 *   <li>{@code tick {namespace, flow, trigger, date, timeoutSeconds, evaluateOnly}}: the flow's
 *       Schedule trigger evaluated by Kestra's own class at that tick and, unless evaluateOnly, the
 *       execution it creates handed over as the scheduler does and awaited to its end.</li>
 *   <li>{@code execution {executionId, timeoutSeconds}}: an execution the others did not start (a
 *       Subflow task's child, by the id in the task's outputs), once it has ended.</li>
 *   <li>{@code triggered {executionId, flow, count, timeoutSeconds}}: the executions of {@code flow}
 *       that {@code executionId} started through a Flow trigger (the executor's own flow-trigger
 *       processing: the execution's trigger names it), once {@code count} of them exist and all have
 *       ended; every one found is answered, so a test sees an extra one too.</li>
 * </ul>
 */
public final class Harness {
    private static final String TENANT = "main";

    private final ApplicationContext context;
    private final ObjectMapper json = JacksonMapper.ofJson();

    private Harness(ApplicationContext context) {
        this.context = context;
    }

    public static void main(String[] args) throws Exception {
        PrintStream answers = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err); // only answers on stdout

        ApplicationContext context;
        TestRunner runner;
        try {
            context = ApplicationContext.builder().environments("test").start();
            runner = context.getBean(TestRunner.class);
            runner.setSchedulerEnabled(false); // ticks are evaluated on request, not by the clock
            runner.run();
        } catch (Throwable e) {
            e.printStackTrace();
            answers.println("{\"ready\": false, \"error\": " + JacksonMapper.ofJson().writeValueAsString(String.valueOf(e.getMessage())) + "}");
            Runtime.getRuntime().halt(1);
            return;
        }

        Harness harness = new Harness(context);
        answers.println(harness.json.writeValueAsString(Map.of("ready", true)));
        try {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            String line;
            while ((line = in.readLine()) != null) {
                if (!line.isBlank()) {
                    answers.println(harness.answer(line));
                }
            }
            runner.close();
            context.close();
        } finally {
            // Kestra's non-daemon threads would keep a JVM nobody talks to alive.
            Runtime.getRuntime().halt(0);
        }
    }

    /** One request line to one answer line, whatever happens: the request's id comes back. */
    private String answer(String line) {
        Object id = null;
        Map<String, Object> answer = new LinkedHashMap<>();
        try {
            @SuppressWarnings("unchecked")
            Map<String, Object> request = json.readValue(line, Map.class);
            id = request.get("id");
            answer.put("result", handle(request));
            answer.put("id", id);
            return json.writeValueAsString(answer);
        } catch (Throwable e) {
            e.printStackTrace();
            Map<String, Object> error = new LinkedHashMap<>();
            error.put("id", id);
            error.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
            try {
                return json.writeValueAsString(error);
            } catch (Exception unreachable) {
                return "{\"error\": \"unserializable answer\"}";
            }
        }
    }

    @SuppressWarnings("unchecked")
    private Object handle(Map<String, Object> request) throws Exception {
        String op = (String) request.get("op");
        return switch (op) {
            case "validate" -> validate((List<Map<String, String>>) request.get("sources"));
            case "load" -> load((String) request.get("dir"));
            case "run" -> run(request);
            case "tick" -> tick(request);
            case "execution" -> execution(request);
            case "triggered" -> triggered(request);
            default -> throw new IllegalArgumentException("unknown op " + op);
        };
    }

    private Object validate(List<Map<String, String>> sources) {
        List<FlowSource> flowSources = sources.stream().map(s -> new FlowSource(s.get("filename"), s.get("content"))).toList();
        List<Map<String, Object>> results = new ArrayList<>();
        for (ValidateConstraintViolation v : context.getBean(FlowService.class).validate(TENANT, flowSources)) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("filename", v.getFilename());
            r.put("flow", v.getFlow());
            r.put("constraints", v.getConstraints());
            r.put("warnings", v.getWarnings());
            r.put("deprecationPaths", v.getDeprecationPaths());
            r.put("infos", v.getInfos());
            results.add(r);
        }
        return Map.of("results", results);
    }

    private Object load(String dir) throws Exception {
        List<FlowWithSource> loaded = context.getBean(LocalFlowRepositoryLoader.class).load(TENANT, new File(dir));
        return Map.of("loaded", loaded.stream().map(f -> f.getNamespace() + "." + f.getId()).toList());
    }

    private Flow flow(Map<String, Object> request) {
        String namespace = (String) request.get("namespace");
        String id = (String) request.get("flow");
        return context.getBean(FlowRepositoryInterface.class)
            .findById(TENANT, namespace, id, Optional.empty())
            .orElseThrow(() -> new IllegalArgumentException("no flow " + namespace + "." + id + " loaded"));
    }

    private static Duration timeout(Map<String, Object> request) {
        return Duration.ofSeconds(((Number) request.getOrDefault("timeoutSeconds", 300)).longValue());
    }

    @SuppressWarnings("unchecked")
    private Object run(Map<String, Object> request) throws Exception {
        Flow flow = flow(request);
        Map<String, Object> inputs = (Map<String, Object>) request.getOrDefault("inputs", Map.of());
        FlowInputOutput flowInputOutput = context.getBean(FlowInputOutput.class);
        Execution execution = context.getBean(TestRunnerUtils.class).runOne(
            flow,
            (f, e) -> flowInputOutput.readExecutionInputs(f, e, inputs),
            timeout(request)
        );
        return describe(execution);
    }

    private Object tick(Map<String, Object> request) throws Exception {
        Flow flow = flow(request);
        String triggerId = (String) request.get("trigger");
        AbstractTrigger trigger = flow.getTriggers().stream()
            .filter(t -> t.getId().equals(triggerId))
            .findFirst()
            .orElseThrow(() -> new IllegalArgumentException("no trigger " + triggerId));
        ZonedDateTime date = ZonedDateTime.parse((String) request.get("date"));

        RunContextFactory runContextFactory = context.getBean(RunContextFactory.class);
        TriggerContext triggerContext = TriggerContext.builder()
            .tenantId(TENANT)
            .namespace(flow.getNamespace())
            .flowId(flow.getId())
            .triggerId(triggerId)
            .date(date)
            .build();
        DefaultRunContext runContext = runContextFactory.initializer()
            .forScheduler((DefaultRunContext) runContextFactory.of(flow, trigger), triggerContext, trigger);
        ConditionContext conditionContext = ConditionContext.builder().runContext(runContext).flow(flow).build();

        TriggerEvaluationResult result = ((Schedulable) trigger).eval(conditionContext, triggerContext)
            .orElseThrow(() -> new IllegalStateException("the trigger created no execution at " + date));
        Execution created = result.toExecution(triggerContext);
        if (Boolean.TRUE.equals(request.get("evaluateOnly"))) {
            return Map.of("trigger", created.getTrigger().getVariables(), "inputs", Optional.ofNullable(created.getInputs()).orElse(Map.of()));
        }
        // Handed over as the scheduler hands over what a tick created: the publisher builds the
        // execution (the flow's labels, typed inputs) and queues it for the executor.
        context.getBean(TriggerExecutionPublisher.class).send(triggerContext, result.withScheduleDate(date.toInstant()));
        Execution execution = context.getBean(TestRunnerUtils.class)
            .awaitExecution(e -> e.getState().isTerminated(), created, timeout(request));
        return describe(execution);
    }

    /** An execution by id, polled in the repository until it has ended (or the deadline passes). */
    private Object execution(Map<String, Object> request) throws Exception {
        String id = (String) request.get("executionId");
        ExecutionRepositoryInterface executions = context.getBean(ExecutionRepositoryInterface.class);
        long deadline = System.nanoTime() + timeout(request).toNanos();
        while (true) {
            Optional<Execution> found = executions.findById(TENANT, id);
            if (found.isPresent() && found.get().getState().isTerminated()) {
                return describe(found.get());
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("execution " + id + (found.isPresent() ? " is still " + found.get().getState().getCurrent() : " not found") + " at the deadline");
            }
            Thread.sleep(100);
        }
    }

    /** The executions of a flow whose trigger is the given execution, polled until enough have ended. */
    private Object triggered(Map<String, Object> request) throws Exception {
        String id = (String) request.get("executionId");
        String flowId = (String) request.get("flow");
        int count = ((Number) request.getOrDefault("count", 1)).intValue();
        ExecutionRepositoryInterface executions = context.getBean(ExecutionRepositoryInterface.class);
        long deadline = System.nanoTime() + timeout(request).toNanos();
        while (true) {
            List<Execution> found = executions.findAllByTriggerExecutionId(TENANT, id).collectList().block().stream()
                .filter(e -> e.getFlowId().equals(flowId))
                .toList();
            if (found.size() >= count && found.stream().allMatch(e -> e.getState().isTerminated())) {
                List<Object> described = new ArrayList<>();
                for (Execution e : found) {
                    described.add(describe(e));
                }
                return Map.of("executions", described);
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(found.size() + " execution(s) of " + flowId + " triggered by " + id
                    + " at the deadline, " + found.stream().map(e -> e.getState().getCurrent().name()).toList());
            }
            Thread.sleep(200);
        }
    }

    private Map<String, Object> describe(Execution execution) throws Exception {
        TaskOutputService outputs = context.getBean(TaskOutputService.class);
        List<Map<String, Object>> taskRuns = new ArrayList<>();
        for (TaskRun taskRun : Optional.ofNullable(execution.getTaskRunList()).orElse(List.of())) {
            Map<String, Object> t = new LinkedHashMap<>();
            t.put("taskId", taskRun.getTaskId());
            t.put("state", taskRun.getState().getCurrent().name());
            t.put("outputs", outputs.getOutputs(taskRun));
            taskRuns.add(t);
        }

        Indexed indexed = indexed(execution);
        List<Map<String, Object>> metrics = new ArrayList<>();
        for (MetricEntry m : indexed.metrics()) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("taskId", m.getTaskId());
            r.put("name", m.getName());
            r.put("type", m.getType());
            r.put("value", m.getValue());
            r.put("tags", m.getTags());
            metrics.add(r);
        }

        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("id", execution.getId());
        answer.put("state", execution.getState().getCurrent().name());
        answer.put("labels", execution.getLabels());
        answer.put("inputs", execution.getInputs());
        answer.put("trigger", execution.getTrigger() == null ? null : execution.getTrigger().getVariables());
        answer.put("taskRuns", taskRuns);
        answer.put("metrics", metrics);
        answer.put("logs", logs(indexed.logs()));
        return answer;
    }

    private record Indexed(List<LogEntry> logs, List<MetricEntry> metrics) {}

    /**
     * The execution's logs and metrics as the UI shows them, once the indexer has stored all of
     * them. The worker queues a task's metrics and logs apart from its result, so an ended
     * execution may still have some in flight: both are polled until the same for two polls.
     */
    private Indexed indexed(Execution execution) throws InterruptedException {
        LogDataStoreInterface logStore = context.getBean(LogDataStoreInterface.class);
        MetricRepositoryInterface metricStore = context.getBean(MetricRepositoryInterface.class);
        Indexed seen = new Indexed(List.of(), List.of());
        int previous = -1;
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (System.nanoTime() < deadline) {
            seen = new Indexed(
                logStore.findByExecutionId(TENANT, execution.getId(), Level.TRACE),
                new ArrayList<>(metricStore.findByExecutionId(TENANT, execution.getId(), Pageable.UNPAGED)));
            int count = seen.logs().size() + seen.metrics().size();
            if (count == previous && !seen.logs().isEmpty()) {
                break;
            }
            previous = count;
            Thread.sleep(200);
        }
        return seen;
    }

    private List<Map<String, Object>> logs(List<LogEntry> logs) {
        List<Map<String, Object>> result = new ArrayList<>();
        for (LogEntry log : logs) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("taskId", log.getTaskId());
            r.put("level", log.getLevel().name());
            r.put("message", log.getMessage());
            result.add(r);
        }
        return result;
    }
}
